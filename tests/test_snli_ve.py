"""SNLI-VE: release conversion, dataset and subset rule, collate, submission, synthetic signal, and
fine-tuning end to end through its run scripts; the task/recipe check of every entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import recipes
from engine.loop import run
from lxrt import LXRTConfig, save_state_dict
from lxrt.tokenizer import LXRTTokenizer
from tasks import nlvr2, snli_ve
from tasks.answers import DataFormatError
from tasks.snli_ve import LABELS, SNLIVEDataset, SNLIVETask, write_snli_ve_predictions
from tasks.snli_ve_prepare import prepare
from tasks.submission import prediction_path
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
SMALL = SyntheticConfig(seed=4, dominant_fraction=0.9, noise=0.3, sizes=dict(
    coco_train_images=4, coco_val_images=3, minival_images=1, coco_test_images=1, vg_images=4, gqa_valid_images=1,
    gqa_submit_images=1, gqa_testdev_images=1, nlvr2_train_sets=1, nlvr2_valid_sets=1, nlvr2_test_sets=1,
    snli_ve_images=300,
))  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snli_ve")
    generate(out, SMALL, progress=False)
    return out


def _line(pair: str, label: str, image: str = "2248275918.jpg", sent: str = "A dog runs.") -> str:
    return json.dumps({"Flikr30kID": image, "sentence1": "premise", "sentence2": sent, "gold_label": label,
                       "pairID": pair, "captionID": "x", "annotator_labels": [label]})


def test_release_lines_become_task_records(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "snli_ve_train.jsonl").write_text(_line("1.jpg#0r1e", "entailment") + "\n" + _line("1.jpg#0r1n", "-") + "\n")
    (raw / "snli_ve_dev.jsonl").write_text(_line("2.jpg#1r1c", "contradiction", image="77") + "\n\n")
    (raw / "snli_ve_test.jsonl").write_text(_line("3.jpg#1r1n", "neutral") + "\n")
    assert prepare(raw, tmp_path / "out", progress=False) == {"train": (1, 1), "valid": (1, 0), "test": (1, 0)}
    train = json.loads((tmp_path / "out/train.json").read_text())
    assert train == [{"pair_id": "1.jpg#0r1e", "img_id": "2248275918", "sent": "A dog runs.", "label": "entailment"}]
    assert json.loads((tmp_path / "out/valid.json").read_text())[0]["img_id"] == "77"
    (raw / "snli_ve_dev.jsonl").write_text(_line("2.jpg#1r1c", "contradiction") + "\n" + _line("9", "maybe") + "\n")
    with pytest.raises(DataFormatError, match=r"snli_ve_dev.jsonl: line 2: gold_label 'maybe'"):
        prepare(raw, tmp_path / "out", progress=False)
    (raw / "snli_ve_dev.jsonl").write_text('{"Flikr30kID": "1.jpg", "gold_label": "neutral", "pairID": "p"}\n')
    with pytest.raises(DataFormatError, match=r"snli_ve_dev.jsonl: line 1 has no string 'sentence2' field"):
        prepare(raw, tmp_path / "out", progress=False)
    (raw / "snli_ve_test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="snli_ve_test.jsonl"):
        prepare(raw, tmp_path / "out", progress=False)


def test_tiny_subset_keeps_every_split_on_the_shared_feature_file(root: Path) -> None:
    """One feature file holds every split's images (train first): the first N lines would leave the
    valid split empty, so the subset is the images of each split's first N records."""
    for split in ("train", "valid", "test"):
        full = SNLIVEDataset(split, root=root)
        tiny = SNLIVEDataset(split, root=root, topk=4)
        first = {r["img_id"] for r in full.data[:4]}
        assert 4 <= len(tiny) < len(full) and {r["img_id"] for r in tiny.data} == first, split


def test_records_checked_and_collated(root: Path, tmp_path: Path) -> None:
    ds = SNLIVEDataset("valid", root=root, strict=True)
    batch = ds.collator(LXRTTokenizer())([ds[0], ds[1], ds[2]])
    assert batch.ids == [ds[i]["pair_id"] for i in range(3)] and batch.feats.shape[:2] == (3, 36)
    assert batch.targets["label"].tolist() == [LABELS.index(ds[i]["label"]) for i in range(3)]
    records = json.loads((root / "snli_ve/valid.json").read_text())
    records[3]["label"] = "yes"
    (tmp_path / "snli_ve").mkdir()
    (tmp_path / "snli_ve/valid.json").write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"valid.json: record 3 \(pair_id '.*'\) has label 'yes'"):
        SNLIVEDataset("valid", root=tmp_path, features=ds.features)


def test_submission_format(tmp_path: Path) -> None:
    path = prediction_path(tmp_path, "test", "snli_ve")
    assert path.name == "test_predict.json"
    write_snli_ve_predictions({"1.jpg#0r1e": "entailment", "2.jpg#3r1c": "neutral"}, path)
    assert json.loads(path.read_text()) == [{"label": "entailment", "pair_id": "1.jpg#0r1e"},
                                            {"label": "neutral", "pair_id": "2.jpg#3r1c"}]
    with pytest.raises(ValueError, match="1 of 2 questions have no prediction"):
        write_snli_ve_predictions({"a": "neutral"}, tmp_path / "x.json", expected=["a", "b"])
    with pytest.raises(ValueError, match="expected one of"):
        write_snli_ve_predictions({"a": 1}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def _features(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = SNLIVEDataset(split, root=root)
    batch = ds.collator(LXRTTokenizer())([ds[i] for i in range(len(ds))])
    words = torch.zeros(len(ds), 30522).scatter_add_(1, batch.input_ids, torch.ones_like(batch.input_ids).float())
    return words, batch.feats.float().mean(1), batch.targets["label"]


def _fit(xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor) -> float:
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    torch.manual_seed(0)
    model = torch.nn.Linear(xtr.shape[1], len(LABELS))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model((xtr - mean) / std), ytr).backward()
        opt.step()
    return float((model((xva - mean) / std).argmax(1) == yva).float().mean())


def words_only_accuracy(root: Path) -> float:
    (wtr, _, ytr), (wva, _, yva) = _features(root, "train"), _features(root, "valid")
    used = wtr.sum(0) > 0
    return _fit(wtr[:, used], ytr, wva[:, used], yva)


def test_synthetic_labels_need_the_image(root: Path) -> None:
    """A linear model on the words stays near chance; on words x mean region features it solves most."""
    (wtr, ftr, ytr), (wva, fva, yva) = _features(root, "train"), _features(root, "valid")
    used = wtr.sum(0) > 0
    words = _fit(wtr[:, used], ytr, wva[:, used], yva)
    products = [(w[:, used, None] * f[:, None]).flatten(1) for w, f in ((wtr, ftr), (wva, fva))]
    both = _fit(products[0], ytr, products[1], yva)
    assert words < 0.45 and both > words + 0.25, (words, both)


def _run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_recipe_of_another_task_is_refused(capsys) -> None:
    """Running a recipe on another task's code stops with a clear error; recipes are found by name
    from an entry point that never imports their module (a fresh process)."""
    with pytest.raises(SystemExit, match="--recipe vqa_lxr955 is a recipe of task 'vqa'.*tasks.vqa.*nlvr2_lxr955"):
        nlvr2.main(["--recipe", "vqa_lxr955", "--print-config"])
    with pytest.raises(SystemExit) as done:
        snli_ve.main(["--print-config"])
    assert done.value.code == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["task"], cfg["train"], cfg["valid"], cfg["load_lxmert"]) == ("snli_ve", "train", "valid",
                                                                              "snap/pretrained/model")
    out = _run(REPO, sys.executable, "-m", "tasks.vqa", "--recipe", "snli_ve_lxr955", "--print-config", check=False)
    assert out.returncode != 0 and "is a recipe of task 'snli_ve'" in out.stderr


def test_loop_refuses_a_config_of_another_task(root: Path, tmp_path: Path) -> None:
    cfg = recipes.get("vqa_test").replace(data_root=str(root), output=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="config is for task 'vqa', but the task given is 'snli_ve'"):
        run(SNLIVETask(cfg), cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_finetune_beats_words_only_and_writes_the_submission(root: Path, tmp_path: Path) -> None:
    """The tiny LXMERT, trained from scratch through the run script, beats a words-only model on the
    synthetic data; the test script writes a complete test_predict.json."""
    model = LXRTConfig.tiny(hidden_size=64, num_attention_heads=4, intermediate_size=128, visual_feat_dim=64)
    (tmp_path / "model.json").write_text(json.dumps(model.to_dict()))
    (tmp_path / "data").symlink_to(root)
    common = ["--model-config", "model.json", "--no-progress"]
    _run(tmp_path, "bash", str(REPO / "run/snli_ve_finetune.bash"), "0", "e2e", *common, "--fromScratch",
         "--loadLXMERT", "", "--batchSize", "32", "--epochs", "20", "--lr", "1e-3", "--optim", "adamw")
    history = json.loads((tmp_path / "snap/snli_ve/e2e/history.json").read_text())
    best = max(r["valid/accuracy"] for r in history)
    words = words_only_accuracy(root)
    assert best > words + 0.1, (best, words)
    _run(tmp_path, "bash", str(REPO / "run/snli_ve_test.bash"), "0", "results", *common, "--test", "test",
         "--load", "snap/snli_ve/e2e/BEST")
    rows = json.loads((tmp_path / "snap/snli_ve/results/test_predict.json").read_text())
    expected = json.loads((root / "snli_ve/test.json").read_text())
    assert sorted(r["pair_id"] for r in rows) == sorted(r["pair_id"] for r in expected)
    assert {r["label"] for r in rows} <= set(LABELS)


PINNED_ORDER = ("contradiction", "neutral", "entailment")  # class k of a saved SNLI-VE head means this label


@pytest.mark.parametrize("index", range(3))
def test_a_snapshots_class_order_is_fixed(root: Path, tmp_path: Path, index: int) -> None:
    """Class k of a saved head is always the same label: training targets, the prediction file and the
    accuracy all read a head that always answers class k as ``PINNED_ORDER[k]`` (a reordered label list
    would silently turn a trained model's entailments into contradictions)."""
    valid = json.loads((root / "snli_ve/valid.json").read_text())
    ds = SNLIVEDataset("valid", root=root)
    batch = ds.collator(LXRTTokenizer())([ds[i] for i in range(len(ds))])
    gold = [PINNED_ORDER.index(ds[i]["label"]) for i in range(len(ds))]
    assert batch.targets["label"].tolist() == gold

    config = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=64)
    (tmp_path / "model.json").write_text(json.dumps(config.to_dict()))
    from tasks.models import Classifier

    model = Classifier(config, num_classes=3)
    with torch.no_grad():
        model.logit_fc[3].weight.zero_()
        model.logit_fc[3].bias.copy_(torch.nn.functional.one_hot(torch.tensor(index), 3).float() * 5)
    best = save_state_dict(model.state_dict(), tmp_path / "trained" / "BEST.pth")
    out = tmp_path / "results"
    metrics = snli_ve.main(["--recipe", "snli_ve_test", "--data-root", str(root), "--output", str(out),
                            "--model-config", str(tmp_path / "model.json"), "--no-progress",
                            "--test", "valid", "--load", str(best)])  # fmt: skip
    rows = json.loads((out / "valid_predict.json").read_text())
    assert sorted(r["pair_id"] for r in rows) == sorted(r["pair_id"] for r in valid)
    assert {r["label"] for r in rows} == {PINNED_ORDER[index]}
    share = sum(r["label"] == PINNED_ORDER[index] for r in valid) / len(valid)
    assert 0 < share < 1
    found = [v for k, v in _flatten(metrics).items() if k.endswith("accuracy")]
    assert found and all(v == pytest.approx(share) or v == pytest.approx(100 * share) for v in found), metrics


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float):
            out[f"{prefix}{key}"] = float(value)
    return out
