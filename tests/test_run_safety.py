"""Runs end to end on generated data: complete submissions, safe and faithful resumes, one run per folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lxrt import LXRTConfig
from tasks import gqa, nlvr2, vqa
from tasks.synthetic import SyntheticConfig, generate

SMALL = SyntheticConfig(seed=3, sizes=dict(coco_train_images=12, coco_val_images=10, minival_images=4,
                                           coco_test_images=4, vg_images=12, gqa_valid_images=4,
                                           gqa_submit_images=3, gqa_testdev_images=4, nlvr2_train_sets=4,
                                           nlvr2_valid_sets=2, nlvr2_test_sets=2))  # fmt: skip
REPO = Path(__file__).resolve().parents[1]
MODEL = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=64)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("safety")
    generate(root / "data", SMALL, progress=False)
    # NLVR2's hidden split (the unreleased test2 images) is a server split too: a copy of test under its name
    shutil.copy(root / "data/nlvr2/test.json", root / "data/nlvr2/hidden.json")
    shutil.copy(root / "data/nlvr2_imgfeat/test_obj36.tsv", root / "data/nlvr2_imgfeat/hidden_obj36.tsv")
    (root / "model.json").write_text(json.dumps(MODEL.to_dict()))
    return root


def _args(root: Path, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    return ["--data-root", str(data or root / "data"), "--output", str(out), "--model-config", str(root / "model.json"),
            "--fromScratch", "--no-progress", *extra]


# ---- server splits ---------------------------------------------------------------------------------

SERVER = {  # task module, test recipe, split, question file, id key, image key, predictions file
    "vqa": (vqa, "vqa_test", "test", "vqa/test.json", "question_id", "img_id", "test_predict.json"),
    "gqa": (gqa, "gqa_test", "submit", "gqa/submit.json", "question_id", "img_id", "submit_predict.json"),
    "nlvr2": (nlvr2, "nlvr2_test", "test", "nlvr2/test.json", "identifier", "img1", "test_predict.csv"),
    "nlvr2-hidden": (nlvr2, "nlvr2_test", "hidden", "nlvr2/hidden.json", "identifier", "img1", "hidden_predict.csv"),
}


def _with_missing_image(base: Path, tmp_path: Path, rel: str, id_key: str, image_key: str) -> tuple[Path, object]:
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    recs = json.loads((data / rel).read_text())
    extra = dict(recs[0])
    extra[id_key] = 990001 if isinstance(extra[id_key], int) else "unseen-990001"
    extra[image_key] = "image-without-features"
    (data / rel).write_text(json.dumps([*recs, extra]))
    return data, extra[id_key]


def _written_ids(path: Path, task: str) -> list:
    """The ids of a submission file, read with the one key its evaluation server reads."""
    if path.suffix == ".csv":
        return [line.split(",")[0] for line in path.read_text().splitlines()]
    key = {"vqa": "question_id", "gqa": "questionId"}[task]
    rows = json.loads(path.read_text())
    assert all(key in r for r in rows), f"{path}: every row needs {key!r}"
    return [r[key] for r in rows]


@pytest.mark.parametrize("task", sorted(SERVER))
def test_server_split_with_missing_features_fails_or_is_written_with_allow_missing(
    base: Path, tmp_path: Path, task: str, caplog: pytest.LogCaptureFixture
) -> None:
    module, recipe, split, rel, id_key, image_key, predict = SERVER[task]
    data, missing_id = _with_missing_image(base, tmp_path, rel, id_key, image_key)
    total = len(json.loads((data / rel).read_text()))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        module.main(_args(base, out, "--recipe", recipe, "--test", split, data=data))
    message = str(err.value.code)
    assert f"1 of {total}" in message and repr(missing_id) in message and "_obj36.tsv" in message, message
    assert "--allow-missing" in message
    assert not (out / predict).exists()
    assert str(missing_id) in (out / f"{split}_missing.txt").read_text()

    with caplog.at_level(logging.WARNING):
        module.main(_args(base, out, "--recipe", recipe, "--test", split, "--allow-missing", data=data))
    ids = _written_ids(out / predict, task)
    assert len(ids) == total - 1 and missing_id not in ids
    assert any("LACK 1 of" in r.getMessage() for r in caplog.records)
    assert any(f"{predict} LACKS 1 of {total}" in r.getMessage() for r in caplog.records)


LOCAL = {  # task module, test recipe, split, question file, id key, image key, predictions file
    "vqa": (vqa, "vqa_test", "minival", "vqa/minival.json", "question_id", "img_id", "minival_predict.json"),
    "gqa": (gqa, "gqa_test", "testdev", "gqa/testdev.json", "question_id", "img_id", "testdev_predict.json"),
    "nlvr2": (nlvr2, "nlvr2_test", "valid", "nlvr2/valid.json", "identifier", "img1", "valid_predict.csv"),
}


@pytest.mark.parametrize("task", sorted(LOCAL))
def test_local_split_with_missing_features_is_predicted_without_them(
    base: Path, tmp_path: Path, task: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A local split (labels, scored here) drops records without features with one count in the log
    and writes the others; it used to be evaluated whole and then refused as an incomplete submission."""
    module, recipe, split, rel, id_key, image_key, predict = LOCAL[task]
    data, missing_id = _with_missing_image(base, tmp_path, rel, id_key, image_key)
    total = len(json.loads((data / rel).read_text()))
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        module.main(_args(base, out, "--recipe", recipe, "--test", split, data=data))
    ids = _written_ids(out / predict, task)
    assert len(ids) == total - 1 and missing_id not in ids
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and f"dropped 1 of {total} records" in drops[0], drops
    assert not (out / f"{split}_missing.txt").exists()


def test_a_task_declares_its_server_split(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A split a task declares in its ``server_splits`` is held to completeness before any
    evaluation; the same split undeclared is local (its record is dropped, the rest predicted)."""
    from tasks import snli_ve

    data, missing_id = _with_missing_image(base, tmp_path, "snli_ve/test.json", "pair_id", "img_id")
    snli_ve.main(_args(base, tmp_path / "local", "--recipe", "snli_ve_test", "--test", "test", data=data))
    assert (tmp_path / "local/test_predict.json").is_file()
    monkeypatch.setattr(snli_ve.SNLIVETask, "server_splits", ("test",))
    out = tmp_path / "server"
    with pytest.raises(SystemExit, match=rf"snli_ve test: 1 of .*{missing_id}"):
        snli_ve.main(_args(base, out, "--recipe", "snli_ve_test", "--test", "test", data=data))
    assert not (out / "test_predict.json").exists() and not (out / "steps.jsonl").exists()


def test_minival_with_missing_features_through_the_run_script(base: Path, tmp_path: Path) -> None:
    """``bash run/vqa_test.bash 0 x --test minival`` on a val2014 feature file that lacks one minival
    image: minival_predict.json and the accuracy are written, exit status 0 (it used to fail at the end)."""
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    image = json.loads((data / "vqa/minival.json").read_text())[0]["img_id"]
    tsv = data / "mscoco_imgfeat/val2014_obj36.tsv"
    lines = tsv.read_text().splitlines(keepends=True)
    tsv.write_text("".join(ln for ln in lines if not ln.startswith(image + "\t")))
    questions = json.loads((data / "vqa/minival.json").read_text())
    lost = sum(q["img_id"] == image for q in questions)
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(REPO / "run/vqa_test.bash"), "0", "x", "--test", "minival", "--data-root", str(data),
           "--model-config", str(base / "model.json"), "--fromScratch", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"vqa minival: dropped {lost} of {len(questions)} records" in proc.stdout + proc.stderr
    written = json.loads((tmp_path / "snap/vqa/x/minival_predict.json").read_text())
    assert len(written) == len(questions) - lost
    assert "accuracy" in json.loads((tmp_path / "snap/vqa/x/minival_metrics.json").read_text())


def test_incomplete_test_split_fails_before_training(base: Path, tmp_path: Path) -> None:
    data, _ = _with_missing_image(base, tmp_path, "vqa/test.json", "question_id", "img_id")
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="1 of"):
        vqa.main(_args(base, out, "--loadLXMERTQA", "", "--batchSize", "8", "--epochs", "1", "--test", "test",
                       data=data))
    assert not (out / "steps.jsonl").exists()


# ---- resuming ---------------------------------------------------------------------------------------

TRAIN = ("--loadLXMERTQA", "", "--batchSize", "8", "--epochs", "2", "--lr", "1e-3", "--optim", "adamw",
         "--save-every", "2")  # 54 training questions: 6 steps per epoch


@pytest.fixture(scope="module")
def straight(base: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    vqa.main(_args(base, out, *TRAIN))
    return out


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, round(e.value, 5)) for e in acc.Scalars(tag)]


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


@pytest.mark.slow
def test_resumed_run_reads_like_one_run(base: Path, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    vqa.main(_args(base, out, *TRAIN, "--max-steps", "9"))  # stops in epoch 1, after 3 of its 6 steps
    assert "Epoch 1" not in (out / "log.log").read_text()
    with open(out / "log.log", "a") as f:  # as if killed after an epoch's lines, before its checkpoint
        f.write("Epoch 1: Train 99.00\n")
    from torch.utils.tensorboard import SummaryWriter

    time.sleep(1.1)  # event files are read in name order, and names start with the second they were made
    with SummaryWriter(str(out / "tb")) as tb:  # ... and after logging its scalars
        tb.add_scalar("train/loss", 99.0, 12)
    time.sleep(1.1)
    vqa.main(_args(base, out, *TRAIN, "--resume"))
    assert _scalars(out, "train/loss") == _scalars(straight, "train/loss")
    lines = (out / "log.log").read_text().splitlines()
    assert lines == (straight / "log.log").read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines].count("Epoch 1") == 3  # Train, Valid, Best, once each
    resumed, reference = _history(out), _history(straight)
    assert [r["epoch"] for r in resumed] == [0, 1]
    for key in ("train/accuracy", "train/loss"):
        assert resumed[1][key] == pytest.approx(reference[1][key], abs=1e-6), key
    steps = [json.loads(s)["step"] for s in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(12))


def test_resume_with_changed_settings_is_refused(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    vqa.main(_args(base, out, *TRAIN, "--max-steps", "3"))
    for change, words in ((("--batchSize", "4"), "--batchSize: 8 in the checkpoint, 4 now"),
                          (("--optim", "sgd"), "--optim: 'adamw' in the checkpoint, 'sgd' now")):
        args = list(TRAIN)
        i = args.index(change[0])
        args[i + 1] = change[1]
        with pytest.raises(SystemExit, match=words):
            vqa.main(_args(base, out, *args, "--resume"))
    with pytest.raises(SystemExit, match="model fields hidden_size"):
        other = tmp_path / "wide.json"
        other.write_text(json.dumps(MODEL.replace(hidden_size=64, intermediate_size=128).to_dict()))
        vqa.main([*_args(base, out, *TRAIN, "--resume"), "--model-config", str(other)])


@pytest.mark.slow
def test_rerun_without_resume_starts_the_files_anew(base: Path, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    vqa.main(_args(base, out, *TRAIN[:-2], "--epochs", "1"))
    assert len((out / "steps.jsonl").read_text().splitlines()) == 6
    assert [r["epoch"] for r in _history(out)] == [0]
    assert (out / "log.log").read_text().count("Epoch 0: Train") == 1
    assert len((out / "previous" / "steps.jsonl").read_text().splitlines()) == 12
    assert (out / "previous" / "BEST.pth").is_file()


def test_resume_refuses_a_checkpoint_that_would_run_code(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "optimizer": {}, "rng": Payload(), "epoch": 0, "step": 1}, out / "checkpoint.pt")
    with pytest.raises(SystemExit, match=r"checkpoint.pt holds Python objects .*refused"):
        vqa.main(_args(base, out, *TRAIN, "--resume"))
    assert not marker.exists()
