"""Flickr30k retrieval: the Karpathy conversion and its errors, the feature file, the training and evaluation
views, recall@K, hard negatives, ``--loadLXMERT`` keeping the matching head, ``--help``, and a tiny run from
scratch through the run scripts that ranks well above chance, checked by an independent recall computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import recipes
from lxrt import CheckpointError, LXMERTForPretraining, LXRTConfig, save_state_dict
from lxrt.tokenizer import LXRTTokenizer
from tasks import flickr30k_data
from tasks.answers import DataFormatError
from tasks.flickr30k import Flickr30kTask
from tasks.flickr30k_data import FEATURES, OWN_FEATURES, Captions, TrainView, recalls
from tasks.flickr30k_prepare import main as prepare_main
from tasks.flickr30k_prepare import prepare
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
# 256 / 64 / 32 two-object images, 5 captions each; 12 regions keep a CPU step short.
SMALL = SyntheticConfig(seed=4, num_boxes=12, dominant_fraction=0.9, noise=0.3, sizes=dict(flickr30k_images=256))
TINY = LXRTConfig.tiny(hidden_size=64, num_attention_heads=4, intermediate_size=128, visual_feat_dim=64,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flickr30k")
    generate(out, SMALL, progress=False, tasks=["flickr30k"])
    return out


def _image(name: str, split: str, *sents: str) -> dict:
    """An ``images[]`` entry as the Karpathy file writes it (with its extra fields)."""
    return {"filename": name, "imgid": 0, "split": split, "sentids": list(range(len(sents))),
            "sentences": [{"raw": s, "tokens": s.split(), "imgid": 0, "sentid": k} for k, s in enumerate(sents)]}


def test_karpathy_file_becomes_caption_records(tmp_path: Path, capsys) -> None:
    karpathy = tmp_path / "dataset_flickr30k.json"
    images = [_image("1000092795.jpg", "train", "Two young guys.", " A man. "), _image("10002456.jpg", "val", "Dogs."),
              _image("1000268201.jpg", "test", "A child.", "A girl."), _image("77.jpg", "restval", "Rest.")]
    karpathy.write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    assert prepare(karpathy, tmp_path / "out") == {"train": (2, 3), "valid": (1, 1), "test": (1, 2)}
    train = json.loads((tmp_path / "out/train.json").read_text())
    assert train == [{"caption_id": "1000092795.jpg#0", "img_id": "1000092795", "sent": "Two young guys."},
                     {"caption_id": "1000092795.jpg#1", "img_id": "1000092795", "sent": "A man."},
                     {"caption_id": "77.jpg#0", "img_id": "77", "sent": "Rest."}]
    assert [r["caption_id"] for r in json.loads((tmp_path / "out/test.json").read_text())] == [
        "1000268201.jpg#0", "1000268201.jpg#1"]
    assert prepare_main(["--karpathy", str(karpathy), "--out", str(tmp_path / "cli")]) == 0
    assert "test.json: 2 captions of 1 images" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][1].pop("filename"), r"images\[1\] has no string 'filename'"),
    (lambda d: d["images"][1].update(split="dev"), r"images\[1\] \(10002456.jpg\): split 'dev', expected one of"),
    (lambda d: d["images"][2]["sentences"][1].pop("raw"), r"images\[2\] \(1000268201.jpg\): sentences\[1\] has no"),
    (lambda d: d["images"][2].update(sentences=[]), r"images\[2\] \(1000268201.jpg\): 'sentences' is \[\]"),
    (lambda d: d["images"].append(_image("10002456.jpg", "train", "x")), r"images\[3\] \(10002456.jpg\) repeats"),
    (lambda d: d["images"].pop(2), r"no images of split\(s\) test"),
    (lambda d: d.pop("images"), "expected an object with an 'images' list"),
])  # fmt: skip
def test_bad_karpathy_files_name_file_and_record(tmp_path: Path, change, message: str) -> None:
    data = {"images": [_image("1.jpg", "train", "a"), _image("10002456.jpg", "val", "b"),
                       _image("1000268201.jpg", "test", "c", "d")]}
    change(data)
    karpathy = tmp_path / "dataset_flickr30k.json"
    karpathy.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=f"dataset_flickr30k.json: {message}"):
        prepare(karpathy, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written from a bad file


def test_unreadable_karpathy_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "k.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"k.json: not a JSON file"):
        prepare(tmp_path / "k.json", tmp_path / "out")
    assert prepare_main(["--karpathy", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 1
    assert "Karpathy split file not found: " in capsys.readouterr().err


def test_features_are_the_tasks_own_file_when_present(tmp_path: Path) -> None:
    """Bug caught: the synthetic images read from the file SNLI-VE's synthetic data writes (another
    task's images under the same path: captions without their images, a run at chance)."""
    assert list(Captions.feature_files(["test"], tmp_path, None)) == [tmp_path / FEATURES]
    (tmp_path / OWN_FEATURES).parent.mkdir(parents=True)
    (tmp_path / OWN_FEATURES).write_text("")
    assert list(Captions.feature_files(["test"], tmp_path, 7)) == [tmp_path / OWN_FEATURES]


def test_training_view_positive_first_then_fresh_negatives(root: Path) -> None:
    view = TrainView("train", root, None, 0, negatives=5, seed=3)
    assert len(view) == len(view.captions) == 5 * len(view.gallery) == 1280
    first = [view[i] for i in range(40)]
    for (cid, sent, images, pos), rec in zip(first, view.captions):
        assert (cid, sent, images[0], view.gallery[pos]) == (rec["caption_id"], rec["sent"], *[rec["img_id"]] * 2)
        assert len(set(images)) == 6 and rec["img_id"] not in images[1:]
    assert [view[i] for i in range(40)] == first  # the same draws for an epoch, in any worker
    view.set_epoch(1)
    assert sum(view[i][2] != first[i][2] for i in range(40)) > 30  # new negatives every epoch
    batch = view.collator(LXRTTokenizer())(first[:4])
    assert batch.input_ids.shape[0] == batch.feats.shape[0] == 24 and batch.ids == [f[0] for f in first[:4]]
    assert batch.targets["image"].tolist() == [f[3] for f in first[:4]]
    with pytest.raises(DataFormatError, match="256 images, too few for 256 negatives"):
        TrainView("train", root, None, 0, negatives=256)


def test_evaluation_view_covers_every_pair_in_file_order(root: Path, monkeypatch) -> None:
    """Bug caught: rows of the scores matrix assembled in another order than captions x gallery images (or
    the padded last block leaking into it), so that recall compares the wrong pairs."""
    monkeypatch.setattr(flickr30k_data, "BLOCK", 5)
    view = Captions("valid", root, None, gallery=12)
    records = json.loads((root / "flickr30k/valid.json").read_text())
    assert view.gallery == list(dict.fromkeys(r["img_id"] for r in records))[:12]
    assert [r["caption_id"] for r in view.captions] == [r["caption_id"] for r in records[:60]]
    assert (view.block, view.blocks, len(view)) == (5, 3, 180)
    collate = view.collator(LXRTTokenizer())
    rows = {}
    for start in range(0, len(view), 7):
        items = [view[k] for k in range(start, min(start + 7, len(view)))]
        batch = collate(items)
        assert batch.targets == {} and batch.feats.shape[0] == 5 * len(items)
        for k, (_, sent, images, _) in zip(batch.ids, items):  # a score that says which pair it is
            rows[k] = [1000.0 * [r["sent"] for r in view.captions].index(sent) + view.padded.index(i) for i in images]
    matrix = view.matrix(rows)
    captions = [r["sent"] for r in view.captions]
    assert matrix.shape == (60, 12)
    assert all(matrix[c, j] == 1000 * captions.index(captions[c]) + j for c in range(60) for j in range(12))
    rows.pop(4)
    with pytest.raises(ValueError, match="1 of 180 rows of scores are missing"):
        view.matrix(rows)


def independent_recalls(scores: np.ndarray, gold: list[int]) -> dict[str, float]:
    """Recall@K (percent) by sorting, caption by caption and image by image."""
    out = {}
    for k in (1, 5, 10):
        out[f"t2i_r{k}"] = 100 * np.mean([g in np.argsort(-row, kind="stable")[:k] for row, g in zip(scores, gold)])
        hits = [any(gold[c] == j for c in np.argsort(-scores[:, j], kind="stable")[:k]) for j in range(scores.shape[1])]
        out[f"i2t_r{k}"] = 100 * np.mean(hits)
    return {**out, "rsum": sum(out.values())}


def test_recall_by_hand_and_ties_against_the_gold() -> None:
    """Bug caught: a tie counted for the gold, so that a model giving every pair one score has perfect recall."""
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.1, 0.8, 0.7], [0.0, 0.2, 0.9]])
    gold = [0, 0, 1, 2]
    r = recalls(scores, gold, ks=(1, 2))
    assert (r["t2i_r1"], r["t2i_r2"]) == (0.75, 1.0)  # caption 1: image 1 scores above its image 0
    assert (r["i2t_r1"], r["i2t_r2"]) == (1.0, 1.0)
    assert pytest.approx(r["rsum"]) == 3.75
    assert recalls(np.zeros((30, 15)), [i // 2 for i in range(30)])["rsum"] == 0.0
    rng = np.random.default_rng(0)
    scores, gold = rng.normal(size=(50, 10)), list(rng.integers(10, size=50))
    mine = {k: 100 * v for k, v in recalls(scores, gold).items()}
    assert mine == pytest.approx(independent_recalls(scores, gold))


class ImageScorer(torch.nn.Module):
    """A model whose score is the first feature of an image's first region: it ranks images by that alone."""

    def forward(self, input_ids, feats, boxes, attention_mask=None, token_type_ids=None, visual_mask=None):
        return feats[:, 0, 0].float()


def test_hard_negatives_are_the_top_scoring_images_of_other_captions(root: Path) -> None:
    """Bug caught: hard negatives taken from the caption's own image (its other captions in the batch) or
    not the top-scoring ones; missing ones (fewer other images than asked) take no part in the loss."""
    cfg = recipes.get("flickr30k_test").replace(data_root=str(root), train="train")
    task = Flickr30kTask(cfg, negatives=1, hard_negatives=3)
    view = TrainView("train", root, None, 0, negatives=1)
    batch = view.collator(LXRTTokenizer())([view[i] for i in (0, 1, 5, 10)])  # captions 0, 1: one image
    out = task.forward(ImageScorer(), batch)
    own = batch.feats[::2, 0, 0].float()  # each caption's own image's score
    assert out.shape == (4, 5) and torch.equal(out[:, 0], own)
    for i in range(4):
        others = sorted((own[j].item() for j in range(4) if batch.targets["image"][j] != batch.targets["image"][i]),
                        reverse=True)
        hard = out[i, 2:]
        assert hard[: len(others)].tolist() == others[:3] and hard[len(others):].isinf().all()
    assert torch.isfinite(task.loss(out, batch)[0])


def test_load_lxmert_keeps_the_matching_head(root: Path, tmp_path: Path) -> None:
    """Bug caught: ``--loadLXMERT`` loading the encoder only, so the pairs are scored by a random head."""
    torch.manual_seed(1)
    pretrained = LXMERTForPretraining(TINY)
    save_state_dict(pretrained.state_dict(), tmp_path / "model_LXRT.pth")
    cfg = recipes.get("flickr30k_test").replace(data_root=str(root), valid="valid", model=TINY,
                                                load_lxmert=str(tmp_path / "model"))
    task = Flickr30kTask(cfg)
    model = task.build_model()
    task.load_pretrained(model)
    assert torch.equal(model.seq_relationship.weight, pretrained.cls.seq_relationship.weight)
    assert torch.equal(model.seq_relationship.bias, pretrained.cls.seq_relationship.bias)
    assert torch.equal(model.lxrt_encoder.bert.pooler.dense.weight, pretrained.bert.pooler.dense.weight)
    encoder_only = {k: v for k, v in pretrained.state_dict().items() if k.startswith("bert.")}
    save_state_dict(encoder_only, tmp_path / "encoder_LXRT.pth")
    task = Flickr30kTask(cfg.replace(load_lxmert=str(tmp_path / "encoder")))
    with pytest.raises(CheckpointError, match=r"encoder_LXRT.pth: no matching head \(cls.seq_relationship.\*\)"):
        task.load_pretrained(task.build_model())


def _run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_help() -> None:
    out = _run(REPO, sys.executable, "-m", "tasks.flickr30k", "--help").stdout
    assert all(flag in out for flag in ("--negatives", "--hard-negatives", "--gallery", "--loadLXMERT"))
    assert "--karpathy" in _run(REPO, sys.executable, "-m", "tasks.flickr30k_prepare", "--help").stdout


@pytest.mark.slow
def test_tiny_run_ranks_well_above_chance(root: Path, tmp_path: Path) -> None:
    """A tiny LXMERT from scratch (dropout 0: see below), 25 epochs of 40 steps through the run script,
    selected on valid rsum over 32 images; the test script ranks the 32 test images for their 160 captions.

    Chance on this gallery: text->image R@1/5/10 = 3.1 / 15.6 / 31.2 %, image->text ~3.1 / 14.8 / 27.6 %,
    rsum ~97. Measured (seed 9595): text->image R@1 43, R@5 94; rsum 403. With the model's dropout at 0.1 the
    same run stays at chance (loss ln 4 for 1500 steps): a from-scratch encoder's pooled output barely depends
    on its input, and only the caption x image interaction gets any gradient (a caption's words are the same for
    all its candidates, and each image is as often a negative as a positive), which dropout noise drowns."""
    (tmp_path / "model.json").write_text(json.dumps(TINY.to_dict()))
    (tmp_path / "data").symlink_to(root)
    common = ["--model-config", "model.json", "--no-progress"]
    _run(tmp_path, "bash", str(REPO / "run/flickr30k_finetune.bash"), "0", "e2e", *common, "--fromScratch",
         "--loadLXMERT", "", "--batchSize", "32", "--epochs", "25", "--lr", "1e-3", "--optim", "adamw",
         "--negatives", "3", "--gallery", "32")
    log = (tmp_path / "snap/flickr30k/e2e/log.log").read_text()
    assert "Epoch 24: Valid" in log and "Train" not in log
    assert json.loads((tmp_path / "snap/flickr30k/e2e/BEST.json").read_text())["task"] == "flickr30k"
    _run(tmp_path, "bash", str(REPO / "run/flickr30k_test.bash"), "0", "results", *common, "--test", "test",
         "--load", "snap/flickr30k/e2e/BEST")
    out = tmp_path / "snap/flickr30k/results"
    scores, written = np.load(out / "test_scores.npy"), json.loads((out / "test_recall.json").read_text())
    captions = json.loads((root / "flickr30k/test.json").read_text())
    images = list(dict.fromkeys(r["img_id"] for r in captions))
    assert scores.shape == (len(captions), len(images)) == (160, 32)
    mine = independent_recalls(scores, [images.index(r["img_id"]) for r in captions])
    assert {k: written[k] for k in mine} == pytest.approx(mine, abs=0.006)
    assert (written["captions"], written["images"]) == (160, 32)
    chance = np.mean([independent_recalls(np.random.default_rng(s).normal(size=scores.shape),
                                          [images.index(r["img_id"]) for r in captions])["rsum"] for s in range(20)])
    assert written["t2i_r1"] > 5 * 100 / 32 and written["t2i_r5"] > 2 * 500 / 32, written
    assert written["rsum"] > 2.5 * chance, (written, chance)
    _run(tmp_path, "bash", str(REPO / "run/flickr30k_test.bash"), "0", "subset", *common, "--test", "test",
         "--load", "snap/flickr30k/e2e/BEST", "--gallery", "8")
    assert np.load(tmp_path / "snap/flickr30k/subset/test_scores.npy").shape == (40, 8)
