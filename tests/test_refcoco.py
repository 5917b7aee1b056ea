"""Referring expressions: the restricted unpickler, release conversion, records, IoU targets and loss, the
prediction files checked against an independent IoU on the feature TSV, and a tiny run above chance."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import recipes
from engine.task import SplitNameError
from features.tsv import iter_tsv
from lxrt import LXMERTForPretraining, LXRTConfig
from tasks.answers import DataFormatError
from tasks.models import RegionScorer
from tasks.refcoco import RefCOCOTask, RefDataset
from tasks.refcoco_prepare import load_plain_pickle, main, prepare
from tasks.refcoco_synthetic import SYNTHETIC_FEATURES, RefCOCOSizes, synthetic_refcoco
from tasks.synthetic import Generator, SyntheticConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refcoco")
    synthetic_refcoco(Generator(SyntheticConfig(seed=3), stream="refcoco", sizes=RefCOCOSizes(refcoco_images=200)), out)
    return out


def synthetic_task(root: Path, **changes) -> RefCOCOTask:
    cfg = recipes.get("refcoco_test").replace(data_root=str(root), **changes)
    return RefCOCOTask.on("refcoco", SYNTHETIC_FEATURES)(cfg)


def iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of [x, y, w, h] boxes (broadcast), written apart from the task's code."""
    ax2, ay2, bx2, by2 = a[..., 0] + a[..., 2], a[..., 1] + a[..., 3], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def tsv_boxes(root: Path) -> dict[str, np.ndarray]:
    """Image id -> its regions as pixel [x, y, w, h], read from the TSV (not the store)."""
    return {r.img_id: np.concatenate([r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2]], 1).astype(np.float64)
            for r in iter_tsv(root / SYNTHETIC_FEATURES)}


def chance(root: Path, split: str) -> float:
    """Expected accuracy of a region picked at random: the fraction of regions with IoU >= 0.5, averaged."""
    boxes = tsv_boxes(root)
    recs = json.loads((root / "refcoco" / f"{split}.json").read_text())
    return float(np.mean([(iou_np(boxes[r["img_id"]], np.array(r["gt_box"])) >= 0.5).mean() for r in recs]))


# ---- the restricted unpickler

class Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_plain_pickles_load_in_every_protocol(tmp_path: Path) -> None:
    """Bug caught: a reader refusing what the release holds (nested dicts, lists, tuples, numbers, None) or
    decoding Python 2 byte strings as ASCII (the release was pickled by Python 2)."""
    data = [{"ref_id": 1, "sentences": [{"sent": "man", "sent_id": 2, "tokens": ["man"]}], "x": (1.5, None, True),
             "big": 2**70}]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "p").write_bytes(pickle.dumps(data, protocol=protocol))
        assert load_plain_pickle(tmp_path / "p") == data, protocol
    # Python 2's pickle.dumps(['caf\xc3\xa9'], 2): a byte string holding UTF-8
    (tmp_path / "py2").write_bytes(b"\x80\x02]q\x00U\x05caf\xc3\xa9q\x01a.")
    assert load_plain_pickle(tmp_path / "py2") == ["café"]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_naming_a_global_is_refused_and_nothing_runs(tmp_path: Path, protocol: int) -> None:
    """Bug caught: ``pickle.load`` on a downloaded file runs whatever function it names (here os.system)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    marker = tmp_path / "ran"
    (raw / "refs(unc).p").write_bytes(pickle.dumps([{"ref_id": 1, "evil": Shell(marker)}], protocol=protocol))
    (raw / "instances.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: refused to load the global (posix|os|nt)\.system"):
        prepare(raw, tmp_path / "out", "refcoco")
    assert not marker.exists()
    (raw / "refs(unc).p").write_bytes(pickle.dumps({1, 2}, protocol=2))  # a set is built by calling builtins.set
    with pytest.raises(DataFormatError, match=r"global (__builtin__|builtins)\.set"):
        load_plain_pickle(raw / "refs(unc).p")
    (raw / "refs(unc).p").write_bytes(b"\x80\x04\x95")
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: not a readable pickle"):
        load_plain_pickle(raw / "refs(unc).p")


# ---- conversion of the release

def _ref(ref_id: int, ann_id: int, image_id: int, split: str, sent_ids: list[int]) -> dict:
    sentences = [{"sent": f"thing {s}", "sent_id": s, "tokens": ["thing", str(s)], "raw": f"Thing {s}."}
                 for s in sent_ids]
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "sentences": sentences,
            "sent_ids": sent_ids, "category_id": 1, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg"}


def _release(raw: Path, refs: list, name: str = "refs(unc).p", bbox: list | None = None) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / name).write_bytes(pickle.dumps(refs, protocol=2))
    anns = [{"id": 7, "bbox": bbox or [10, 20.5, 30, 40], "image_id": 581857, "category_id": 1, "area": 1200.0},
            {"id": 8, "bbox": [1.0, 2.0, 3.0, 4.0], "image_id": 99, "category_id": 1, "area": 12.0}]
    images = [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "height": 480, "width": 640},
              {"id": 99, "file_name": "COCO_train2014_000000000099.jpg", "height": 10, "width": 10}]
    (raw / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                    "categories": [{"id": 1, "name": "person"}]}))


def test_release_becomes_one_record_per_expression(tmp_path: Path, capsys) -> None:
    """Bugs caught: one record per ref instead of per sentence, the box of another annotation, an image id that is
    not the obj36 one (12 digits), RefCOCOg read from the unc file or into the unc split names."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    _release(raw, [_ref(0, 7, 581857, "testA", [0, 1]), _ref(1, 8, 99, "train", [5])])
    assert prepare(raw, out, "refcoco") == {"train": 1, "val": 0, "testA": 2, "testB": 0}
    assert json.loads((out / "refcoco/testA.json").read_text()) == [
        {"ref_id": 0, "sent_id": s, "sent": f"thing {s}", "img_id": "COCO_train2014_000000581857",
         "gt_box": [10.0, 20.5, 30.0, 40.0], "split": "testA"} for s in (0, 1)]
    assert json.loads((out / "refcoco/val.json").read_text()) == []
    _release(raw, [_ref(0, 7, 581857, "test", [0]), _ref(1, 8, 99, "val", [5])], name="refs(umd).p")
    assert main(["--dataset", "refcocog", "--raw", str(raw), "--out", str(out)]) == 0
    assert "refcocog/test.json: 1 expressions" in capsys.readouterr().out
    assert json.loads((out / "refcocog/val.json").read_text())[0]["img_id"] == "COCO_train2014_000000000099"


BAD_RELEASES = [  # (refs, bbox of annotation 7 or None, the error)
    ([_ref(0, 6, 581857, "train", [0])], None,
     r"refs\(unc\)\.p: ref 0 \(ref_id 0\): ann_id 6 is not an annotation of .*instances.json"),
    ([_ref(0, 7, 581857, "testC", [0])], None,
     r"ref 0 \(ref_id 0\): split 'testC', expected one of \['train', 'val', 'testA', 'testB'\]"),
    ([_ref(0, 7, 581857, "val", [0]), _ref(1, 7, 581857, "val", [0])], None, r"ref 1: sent_id 0 is also in ref 0"),
    ([_ref(0, 7, 581857, "val", [0])], [1, 2, 0, 4],
     r"instances.json: annotation 7 bbox: box \[1, 2, 0, 4\] is not \[x, y, w, h\]"),
    ([_ref(0, 7, 99, "val", [0])], None, r"ref 0 \(ref_id 0\): image_id 99, but annotation 7 .* is on image 581857"),
    ([{"ref_id": 3, "ann_id": 7}], None, r"ref 0 \(ref_id 3\): 'split' is None, expected str"),
    ([{**_ref(0, 7, 581857, "val", [0]), "sentences": [{"sent_id": 0}]}], None,
     r"ref_id 0\) sentence 0: 'sent' is None"),
    ({"refs": []}, None, r"refs\(unc\)\.p: holds a dict, expected a list of refs"),
]


@pytest.mark.parametrize("refs, bbox, message", BAD_RELEASES)
def test_bad_release_stops_with_file_and_record(tmp_path: Path, refs, bbox, message: str) -> None:
    """Bug caught: a broken release converted silently or stopped by a bare KeyError (file and ref unnamed)."""
    _release(tmp_path / "raw", refs, bbox=bbox)
    with pytest.raises(DataFormatError, match=message):
        prepare(tmp_path / "raw", tmp_path / "out", "refcoco")
    assert not (tmp_path / "out/refcoco/val.json").exists()


def test_missing_release_files_are_named(tmp_path: Path, capsys) -> None:
    """Bug caught: a traceback (or the wrong file name) instead of the one-line error naming the missing file."""
    _release(tmp_path / "raw", [])
    with pytest.raises(FileNotFoundError, match=r"refcocog release files not found: .*refs\(umd\)\.p"):
        prepare(tmp_path / "raw", tmp_path / "out", "refcocog")
    assert main(["--dataset", "refcocog", "--raw", str(tmp_path / "raw")]) == 1
    assert "refs(umd).p" in capsys.readouterr().err


# ---- records, targets, loss, splits

def test_records_are_checked(root: Path, tmp_path: Path) -> None:
    """Bug caught: a record with a box in another format ([x1, y1, x2, y2] with x2 < x1 ...) trained silently."""
    ds = synthetic_task(root).dataset("val", train=False)
    recs = json.loads((root / "refcoco/val.json").read_text())
    recs[5]["gt_box"] = [10, 10, -3, 4]
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco/val.json").write_text(json.dumps(recs))
    with pytest.raises(DataFormatError, match=r"val.json: record 5 gt_box: box \[10, 10, -3, 4\] is not"):
        RefDataset("val", tmp_path, None, "refcoco", features=ds.features)
    del recs[5]["gt_box"]
    (tmp_path / "refcoco/val.json").write_text(json.dumps(recs))
    with pytest.raises(DataFormatError, match=r"val.json: record 5 has no 'gt_box' field"):
        RefDataset("val", tmp_path, None, "refcoco", features=ds.features)


def test_dataset_and_collator_pickle_for_worker_processes(root: Path, tmp_path: Path) -> None:
    """Bug caught: a dataset or collator that DataLoader workers started by spawn or forkserver (macOS, Python
    3.14) cannot receive, such as an instance of a class built at run time for one dataset."""
    (tmp_path / "refcoco_imgfeat").symlink_to(root / "refcoco_imgfeat")
    (tmp_path / "refcoco+").mkdir()
    (tmp_path / "refcoco+/val.json").write_text((root / "refcoco/val.json").read_text())
    task = RefCOCOTask.on("refcoco+", SYNTHETIC_FEATURES)(recipes.get("refcoco_test").replace(data_root=str(tmp_path)))
    ds = task.dataset("val", train=False)
    copy, collate = pickle.loads(pickle.dumps(ds)), pickle.loads(pickle.dumps(task.collator(ds)))
    assert copy.task == "refcoco+" and len(copy) == len(ds) == 200
    assert torch.equal(collate(copy.data[:3]).targets["scale"], task.collator(ds)(ds.data[:3]).targets["scale"])


def test_targets_and_loss_in_pixels_against_an_independent_iou(root: Path) -> None:
    """Bugs caught: IoU of normalized region boxes against a pixel ground truth, boxes scaled by (h, w), padded
    regions scored, targets not thresholded at 0.5 (ViLBERT's soft targets: IoU where >= 0.5, else 0), the chosen
    box written as x1 y1 x2 y2 or normalized instead of [x, y, w, h] in pixels."""
    task = synthetic_task(root)
    ds = task.dataset("val", train=False)
    batch = task.collator(ds)([ds[i] for i in range(24)])
    assert batch.visual_mask is not None  # 12-36 regions per image: some rows are padded
    pixels = tsv_boxes(root)
    torch.manual_seed(0)
    model = RegionScorer(LXRTConfig.tiny(visual_feat_dim=ds.features.feat_dim)).eval()
    output = task.forward(model, batch)
    assert (output[batch.visual_mask == 0] == torch.finfo(torch.float32).min).all()
    loss, expected = task.loss(output, batch)[0], 0.0
    for row, rec in enumerate(ds.data[:24]):
        regions = pixels[rec["img_id"]]
        iou = iou_np(regions, np.array(rec["gt_box"]))
        target = np.where(iou >= 0.5, iou, 0.0)
        x = output[row, : len(regions)].double().detach().numpy()
        expected += float(np.sum(np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))))
        region_px = (batch.boxes[row, : len(regions)].double() * batch.targets["scale"][row].double()).numpy()
        np.testing.assert_allclose(region_px[:, 2:] - region_px[:, :2], regions[:, 2:], atol=0.01)
    assert float(loss.detach()) == pytest.approx(expected / 24, rel=1e-5)
    codes = task.prediction_codes(output, batch)
    assert codes.shape == (24, 5) and (batch.visual_mask[torch.arange(24), codes[:, 0].long()] == 1).all()
    chosen = [pixels[rec["img_id"]][int(c[0])] for rec, c in zip(ds.data, codes.tolist())]
    np.testing.assert_allclose(codes[:, 1:].numpy(), np.stack(chosen), atol=0.01)  # [x, y, w, h] in pixels


def test_load_lxmert_loads_the_encoder_under_the_region_head(root: Path, tmp_path: Path) -> None:
    """Bug caught: the region model keeping its encoder under another name than ``lxrt_encoder``, where
    ``--loadLXMERT`` does not reach it (the head would train on a from-scratch encoder)."""
    config = LXRTConfig.tiny(visual_feat_dim=64)
    torch.manual_seed(1)
    pretrained = LXMERTForPretraining(config)
    torch.save(pretrained.state_dict(), tmp_path / "model_LXRT.pth")
    task = synthetic_task(root, model=config, valid="val", load_lxmert=str(tmp_path / "model"), from_scratch=True)
    model = task.build_model()
    task.load_pretrained(model)
    for name, value in pretrained.bert.state_dict().items():
        assert torch.equal(model.lxrt_encoder.bert.state_dict()[name], value), name
    assert task.snapshot_facts(model).num_outputs == 1


def test_split_names_follow_the_dataset() -> None:
    """Bugs caught: ``--test val,testA`` read as one split (a file named 'val,testA'), RefCOCO's names accepted
    for RefCOCOg, the dataset's folder not followed."""
    assert [(s.load, s.output) for s in RefCOCOTask.on("refcocog").predict_splits("val,test")] == [
        ("val", "val"), ("test", "test")]
    with pytest.raises(SplitNameError, match="testA: unknown refcoco split.*accepted: train, val, test"):
        RefCOCOTask.on("refcocog").predict_splits("val,testA")
    assert RefCOCOTask.on("refcoco+").folder() == "refcoco+" and RefCOCOTask.folder() == "refcoco"


def test_prediction_file_is_complete_or_not_written(root: Path, tmp_path: Path) -> None:
    """Bug caught: a prediction file silently lacking expressions (their accuracy would be computed on fewer)."""
    task = synthetic_task(root)
    ds = task.dataset("testB", train=False)
    preds = {r["sent_id"]: {"index": 0, "box": [1.0, 2.0, 3.0, 4.0]} for r in ds.data[1:]}
    with pytest.raises(ValueError, match=r"testB_predict.json: 1 of \d+ questions have no prediction"):
        task.write_predictions(preds, ds, tmp_path, "testB")
    assert not list(tmp_path.iterdir())


def test_help() -> None:
    """Bug caught: the entry points failing before argument parsing (an import error, a flag clash)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for module, words in (("tasks.refcoco", ("--dataset", "refcocog", "--features")),
                          ("tasks.refcoco_prepare", ("--raw", "refs(umd).p", "refuses every global"))):
        out = subprocess.run([sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True)
        assert out.returncode == 0 and all(w in " ".join(out.stdout.split()) for w in words), out.stderr


# ---- end to end

def _run(cwd: Path, *cmd: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def check_predictions(root: Path, folder: str, split: str, out: Path) -> float:
    """The written files against the TSV and an independent IoU: each row's box is its region's pixel box,
    every expression has one row, and ``<split>_accuracy.json`` is the IoU >= 0.5 rate of those boxes."""
    pixels, recs = tsv_boxes(root), json.loads((root / folder / f"{split}.json").read_text())
    rows = {r["sent_id"]: r for r in json.loads((out / f"{split}_predict.json").read_text())}
    assert sorted(rows) == sorted(r["sent_id"] for r in recs)
    hits = []
    for rec in recs:
        row = rows[rec["sent_id"]]
        assert row["ref_id"] == rec["ref_id"] and set(row) == {"box", "index", "ref_id", "sent_id"}
        np.testing.assert_allclose(row["box"], pixels[rec["img_id"]][row["index"]], atol=0.01)
        hits.append(iou_np(np.array(row["box"]), np.array(rec["gt_box"])) >= 0.5)
    summary = json.loads((out / f"{split}_accuracy.json").read_text())
    assert summary == {"accuracy": pytest.approx(float(np.mean(hits)), abs=1e-12), "expressions": len(recs),
                       "split": split}
    return summary["accuracy"]


@pytest.mark.slow
def test_tiny_run_beats_chance_and_writes_checked_files(root: Path, tmp_path: Path) -> None:
    """A tiny LXMERT trained from scratch through the run script (12 epochs of 800 expressions, about a minute
    of one CPU core) picks the described region far above chance. Seen: chance 0.053 on val (the fraction of
    regions with IoU >= 0.5 with the ground truth, averaged over expressions), valid accuracy 0.675 after 12
    epochs (the region order is random, so the words alone cannot pick a region; each expression's colour-shape
    pair is unique in its image). The test script then writes every split's files, checked against the TSV and an
    independent IoU, for RefCOCO and, through --dataset, for a RefCOCOg folder."""
    model = LXRTConfig.tiny(hidden_size=64, num_attention_heads=4, intermediate_size=128, visual_feat_dim=64)
    (tmp_path / "model.json").write_text(json.dumps(model.to_dict()))
    (tmp_path / "data").symlink_to(root)
    common = ["--model-config", "model.json", "--no-progress", "--features", SYNTHETIC_FEATURES]
    _run(tmp_path, "bash", str(REPO / "run/refcoco_finetune.bash"), "0", "e2e", *common, "--fromScratch",
         "--loadLXMERT", "", "--batchSize", "16", "--epochs", "12", "--lr", "1e-3", "--optim", "adam")
    history = json.loads((tmp_path / "snap/refcoco/e2e/history.json").read_text())
    best, floor = max(r["valid/accuracy"] for r in history), chance(root, "val")
    print(f"valid accuracy by epoch {[round(r['valid/accuracy'], 3) for r in history]}, chance {floor:.3f}")
    assert 0.02 < floor < 0.1 and best > max(0.3, 6 * floor), (best, floor)
    _run(tmp_path, "bash", str(REPO / "run/refcoco_test.bash"), "0", "results", *common, "--test", "val,testA,testB",
         "--load", "snap/refcoco/e2e/BEST")
    for split in ("val", "testA", "testB"):
        accuracy = check_predictions(root, "refcoco", split, tmp_path / "snap/refcoco/results")
        print(f"{split}: accuracy {accuracy:.3f}, chance {chance(root, split):.3f}")
        assert accuracy > 4 * chance(root, split), (split, accuracy)
    umd = tmp_path / "umd"  # RefCOCOg's split names, read through --dataset refcocog
    (umd / "refcocog").mkdir(parents=True)
    (umd / "refcoco_imgfeat").symlink_to(root / "refcoco_imgfeat")
    for name, source in (("val", "val"), ("test", "testA")):
        (umd / "refcocog" / f"{name}.json").write_text((root / "refcoco" / f"{source}.json").read_text())
    _run(tmp_path, "bash", str(REPO / "run/refcoco_test.bash"), "0", "umd", *common, "--dataset", "refcocog",
         "--data-root", str(umd), "--test", "val,test", "--load", "snap/refcoco/e2e/BEST")
    for split in ("val", "test"):
        check_predictions(umd, "refcocog", split, tmp_path / "snap/refcoco/umd")
