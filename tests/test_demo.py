"""The easy-VQA demo end to end on a small subset (200 images per split, the ``demo_run`` fixture of
conftest.py), its files and its pieces."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from demo import run_demo
from demo.report import curve_rows, pick_examples, read_predictions, score_predictions
from demo.task import EasyVQADataset, accuracy_by_type, split_stores, type_key
from tasks.answers import DataFormatError

TYPES = ("color", "shape", "yes/no color", "yes/no shape")
ANSWERS_PER_TYPE = {"color": 8, "shape": 3, "yes/no color": 2, "yes/no shape": 2}


def _chance(records: list[dict]) -> float:
    """Accuracy of guessing uniformly among the answers of each question's type."""
    return sum(1 / ANSWERS_PER_TYPE[r["question_type"]] for r in records) / len(records)


def _zeroed_features_run(root: Path, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The same snapshot evaluated with every region feature set to zero (what a model that ignores
    the image can do with these weights)."""
    from demo.task import StandardizingCollator

    out = tmp_path / "zeroed"
    shutil.copytree(root / "out", out)
    real_call = StandardizingCollator.__call__

    def zeroed(self, examples):
        batch = real_call(self, examples)
        batch.feats = torch.zeros_like(batch.feats)
        return batch

    monkeypatch.setattr(StandardizingCollator, "__call__", zeroed)
    args[args.index("--output") + 1] = str(out)
    metrics = run_demo.main(args)
    assert metrics["reused_snapshot"]
    return metrics


def test_demo_learns_from_the_image(demo_run, demo_args, tmp_path, monkeypatch) -> None:
    root, metrics = demo_run
    records = json.loads((root / "data" / "easy_vqa" / "test.json").read_text())
    assert metrics["questions"] == len(records)
    assert metrics["accuracy"] > _chance(records) + 0.15, metrics
    # The question alone answers a good share (e.g. "is there not a red shape?" is usually "yes"),
    # and these few seconds of training mostly learn that side; the full demo learns the images.
    # Without the image the same weights must do worse: a model that ignores the image gives the
    # same accuracy to the last digit (measured: 0.6587 both, when trained with a too-high lr).
    blind = _zeroed_features_run(root, demo_args(root), tmp_path, monkeypatch)
    assert metrics["accuracy"] > blind["accuracy"] + 0.005, (metrics["accuracy"], blind["accuracy"])


def test_demo_files_have_the_documented_formats(demo_run) -> None:
    root, metrics = demo_run
    out = root / "out"
    records = json.loads((root / "data" / "easy_vqa" / "test.json").read_text())
    rows = json.loads((out / "test_predict.json").read_text())
    assert isinstance(rows, list) and all(set(r) == {"question_id", "answer"} for r in rows)
    assert sorted(r["question_id"] for r in rows) == sorted(r["question_id"] for r in records)
    assert all(isinstance(r["question_id"], int) and isinstance(r["answer"], str) for r in rows)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("accuracy", "questions", "per_question_type", "timings_s", "epochs_trained", "config"):
        assert key in saved, key
    assert set(saved["per_question_type"]) == set(TYPES)
    assert sum(v["questions"] for v in saved["per_question_type"].values()) == len(records)
    assert saved["epochs_trained"] == 4 and saved["timings_s"]["train"] > 0
    assert saved["cut_short"] is False and saved["epochs_done"] == saved["epochs_planned"] == 4

    for name in ("curves.png", "predictions.png"):
        with Image.open(out / name) as im:
            im.load()
            assert im.format == "PNG" and min(im.size) > 200, name
    for name in ("BEST.pth", "run.log", "log.log", "history.json"):
        assert (out / name).is_file(), name


def test_rerun_reuses_the_snapshot(demo_run, demo_args) -> None:
    root, first = demo_run
    best = root / "out" / "BEST.pth"
    before = best.stat().st_mtime_ns
    again = run_demo.main(demo_args(root))
    assert again["reused_snapshot"] and again["timings_s"]["train"] is None
    assert best.stat().st_mtime_ns == before
    assert again["accuracy"] == first["accuracy"]


def test_resume_continues_an_unfinished_run(demo_run, demo_args, tmp_path, monkeypatch) -> None:
    """Training killed in its third epoch, then ``--resume``: it continues from the end of epoch 2
    (the last checkpoint) and ends with the uninterrupted run's accuracy."""
    from engine.loop import Trainer

    root, first = demo_run
    steps = len((root / "out" / "steps.jsonl").read_text().splitlines())
    kill_at = steps // 4 * 2 + 3
    out = tmp_path / "out"
    args = demo_args(root)
    args[args.index("--output") + 1] = str(out)
    real_step = Trainer._train_step
    done = {"n": 0}

    def step_then_die(self, *a, **k):
        if done["n"] == kill_at:
            raise KeyboardInterrupt("killed")
        done["n"] += 1
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "_train_step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_demo.main(args)
    monkeypatch.undo()
    assert not json.loads((out / run_demo.STATE_FILE).read_text())["complete"]
    resumed = run_demo.main([*args, "--resume"])
    assert not resumed["reused_snapshot"] and resumed["epochs_trained"] == 4
    log = (out / "run.log").read_text()
    assert "resuming the training" in log and "epoch 2, step 0" in log
    assert len((out / "steps.jsonl").read_text().splitlines()) == steps
    assert resumed["accuracy"] == first["accuracy"]


def test_a_slow_machine_changes_the_time_not_the_result(demo_run, demo_args, tmp_path, monkeypatch, caplog) -> None:
    """On a machine the speed check finds 100x slower: without a budget (the default) the plan stays the
    recipe's 4 epochs; with an opt-in --max-minutes the run is cut to 1 epoch and says so in its last lines
    and metrics.json, and a rerun trains again instead of reusing the cut snapshot as a finished run.
    Catches a budget that is on by default, a cut run reported as complete, or one reused as finished."""
    import logging

    from demo.task import DEMO_RECIPE

    root, _ = demo_run
    assert run_demo.parse_args([]).max_minutes == 0  # no budget unless asked for
    data = run_demo.prepare(run_demo.parse_args(["--data-root", str(root / "data"), "--max-images", "200",
                                                 "--no-progress"]))  # fmt: skip
    assert run_demo.plan_epochs(DEMO_RECIPE, data, 0, rate=5.0) == DEMO_RECIPE.epochs

    monkeypatch.setattr(run_demo, "measure_speed", lambda task, *a, **k: 5.0)  # examples/s: a slowed machine
    args = demo_args(root)
    args[args.index("--max-minutes") + 1] = "2"
    args[args.index("--output") + 1] = str(tmp_path / "cut")
    caplog.set_level(logging.INFO, logger="lxmert.demo")
    cut = run_demo.main(args)
    assert cut["cut_short"] is True and cut["epochs_done"] == 1 and cut["epochs_planned"] == 4
    assert cut["epochs_trained"] == 1 and cut["max_minutes"] == 2
    saved = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert saved["cut_short"] is True and saved["epochs_done"] == 1 and saved["epochs_planned"] == 4
    last = [r.getMessage() for r in caplog.records][-1].splitlines()
    assert "CUT SHORT: trained 1 of the recipe's 4 epochs" in "\n".join(last[-4:]), last[-4:]

    caplog.clear()
    again = run_demo.main(args)  # the same command: the cut snapshot is not reused as a finished run
    assert not again["reused_snapshot"] and again["cut_short"] and again["timings_s"]["train"] > 0
    assert any("was cut short" in r.getMessage() for r in caplog.records)


def test_bad_knobs_and_foreign_output_folders_are_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        run_demo.main(["--hidden", "50"])
    assert "multiple of 32" in str(err.value)
    with pytest.raises(SystemExit):
        run_demo.main(["--fresh", "--resume"])
    with pytest.raises(SystemExit) as err:
        run_demo.main(["--help"])
    assert err.value.code == 0 and "--max-minutes" in capsys.readouterr().out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="holds no demo run"):
        run_demo.clear_run_folder(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def _record(qid: int, img: str, sent: str, answer: str, qtype: str) -> dict:
    return {"question_id": qid, "img_id": img, "sent": sent, "label": {answer: 1.0}, "question_type": qtype}


def _records() -> list[dict]:
    return [
        _record(1, "test_0", "what shape?", "circle", "shape"),
        _record(2, "test_1", "what color?", "red", "color"),
        _record(3, "test_1", "is it red?", "yes", "yes/no color"),
        _record(4, "test_2", "is it blue?", "no", "yes/no color"),
    ]


def test_accuracy_per_question_type() -> None:
    preds = {1: "circle", 2: "blue", 3: "yes", 4: "yes"}
    acc = accuracy_by_type(preds, _records())
    assert acc == {
        "accuracy": 0.5,
        "accuracy/color": 0.0,
        "accuracy/shape": 1.0,
        "accuracy/yes_no_color": 0.5,
    }
    scored = score_predictions(preds, _records())
    assert scored["per_question_type"]["yes/no color"] == {"accuracy": 0.5, "questions": 2}
    assert type_key("yes/no shape") == "yes_no_shape"
    with pytest.raises(ValueError, match="no prediction"):
        score_predictions({1: "circle"}, _records())


def test_prediction_file_errors_name_the_file_and_entry(tmp_path) -> None:
    path = tmp_path / "test_predict.json"
    path.write_text(json.dumps([{"question_id": 1, "answer": "red"}, {"question_id": "2", "answer": "no"}]))
    with pytest.raises(DataFormatError, match=r"test_predict\.json: entry 1"):
        read_predictions(path)
    path.write_text('[{"question_id": 1, "answer": "red"}]')
    assert read_predictions(path) == {1: "red"}


def test_grid_examples_are_on_distinct_images_and_show_mistakes() -> None:
    preds = {1: "circle", 2: "blue", 3: "yes", 4: "no"}
    shown = pick_examples(preds, _records(), count=3, seed=1)
    assert len(shown) == 3 and len({r["img_id"] for r in shown}) == 3
    assert any(r["question_id"] == 2 for r in shown)  # the one mistake is shown


def test_curve_rows_turn_history_into_labelled_epochs() -> None:
    history = [{"epoch": 0, "train/loss": 2.0, "valid/accuracy": 0.5, "valid/accuracy/color": 0.25,
                "train/accuracy/color": 0.1, "train/examples_per_s": 300.0}]  # fmt: skip
    assert curve_rows(history) == [
        {"epoch": 1.0, "train loss": 2.0, "valid acc": 0.5, "valid acc (color)": 0.25}
    ]


def test_dataset_needs_the_manifest_and_a_store_per_split(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        split_stores(tmp_path / "easy_vqa")
    folder = tmp_path / "easy_vqa"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"stores": {"train": "train_grid.store"}}))
    with pytest.raises(ValueError, match="no feature store for split 'test'"):
        EasyVQADataset.feature_files(["test"], tmp_path, None)
    assert EasyVQADataset.feature_files(["train"], tmp_path, 5) == {folder / "train_grid.store": 5}
    assert os.fspath(split_stores(folder)["train"]).endswith("train_grid.store")


def test_time_budget_sets_the_epochs() -> None:
    from demo.easy_vqa_data import EasyVQAData
    from demo.task import DEMO_RECIPE

    counts = {"train": {"questions": 30_000}, "minival": {"questions": 3_000}}
    data = EasyVQAData(Path("unused"), {}, {}, Path("a"), Path("b"), counts)
    cfg = DEMO_RECIPE.replace(epochs=4)
    # 1000 examples/s: 30 s of training and 1 s of validation per epoch
    assert run_demo.plan_epochs(cfg, data, max_minutes=10, rate=1000.0) == 4
    assert run_demo.plan_epochs(cfg, data, max_minutes=1.1, rate=1000.0) == 2
    assert run_demo.plan_epochs(cfg, data, max_minutes=0.1, rate=1000.0) == 1  # at least one epoch
    assert run_demo.plan_epochs(cfg, data, max_minutes=0, rate=1.0) == 4  # no budget
