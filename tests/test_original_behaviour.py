"""Behaviours a user of the original commands notices: ``--test`` only predicts, its split names, the
precision of evaluation-only runs, model selection from the original's initial score, the "Valid Oracle"
line and the text of ``log.log`` (fine-tuning and pretraining)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from engine import loop
from engine.batch import Batch
from engine.config import TrainConfig
from engine.original_log import finetune_epoch_text, losses_line, pretrain_epoch_text, qa_accuracy_line
from engine.task import Task
from tasks.metrics import oracle_accuracy
from tasks.splits import SplitNameError, resolve_test_splits

# ---- split names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,name,expected",
    [
        ("vqa", "test", [("test", "test")]),
        ("vqa", "minival", [("minival", "minival")]),
        ("vqa", "val", [("minival", "minival")]),
        ("vqa", "nominival", [("minival", "minival")]),  # any name with 'val' evaluates minival
        ("gqa", "testdev", [("testdev", "testdev")]),
        ("gqa", "testdev_all", [("testdev", "testdev")]),  # names containing testdev load testdev
        ("gqa", "submit", [("submit", "submit")]),
        ("gqa", "submit,testdev", [("submit,testdev", "submit"), ("testdev", "testdev")]),
        ("nlvr2", "hidden", [("hidden", "hidden")]),
        ("nlvr2", "test", [("test", "test")]),
        ("nlvr2", "valid", [("valid", "valid")]),
        ("easy_vqa", "test", [("test", "test")]),  # not a task of the original: the name as it is
    ],
)
def test_split_names_as_the_original_reads_them(task: str, name: str, expected: list[tuple[str, str]]):
    assert [(s.load, s.output) for s in resolve_test_splits(task, name)] == expected


@pytest.mark.parametrize("task,name", [("vqa", "train"), ("gqa", "valid"), ("gqa", "train"), ("nlvr2", "train")])
def test_unknown_split_names_list_the_accepted_ones(task: str, name: str):
    with pytest.raises(SplitNameError, match=r"accepted: a name containing") as err:
        resolve_test_splits(task, name)
    assert repr(name) in str(err.value)


# ---- a small task of the shared loop ------------------------------------------------------------------


class _Examples(torch.utils.data.Dataset):
    def __init__(self, n: int, labelled: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": i, "x": self.x[i], "y": self.y[i]}


class _ToyTask(Task):
    """Binary classification of 4-d points; ``wrong`` makes every validation prediction wrong."""

    name = "toy"

    def __init__(self, wrong: bool = False, oracle: float | None = None) -> None:
        self.wrong = wrong
        self._oracle = oracle
        self.test_calls: list[str] = []

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(4, 2)

    def dataset(self, splits: str, train: bool, full: bool = False) -> _Examples:
        if full:
            self.test_calls.append(splits)
        return _Examples(32 if train else 12)

    def collator(self, dataset: Any) -> Callable[[list[Any]], Batch]:
        def collate(rows: list[dict[str, Any]]) -> Batch:
            x = torch.stack([r["x"] for r in rows])
            n = len(rows)
            zeros = torch.zeros(n, 1, dtype=torch.long)
            return Batch(zeros, zeros, zeros, x, torch.zeros(n, 1, 4),
                         targets={"y": torch.stack([r["y"] for r in rows])}, ids=[r["id"] for r in rows])

        return collate

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(batch.feats)

    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        ce = nn.functional.cross_entropy(output, batch.targets["y"])
        half = (output ** 2).mean() * 0.0 + ce / 2
        return ce, {"First": half.detach(), "Second": (ce - half).detach()}

    def predict(self, output: Tensor, batch: Batch) -> dict[Any, Any]:
        return dict(zip(batch.ids, output.argmax(-1).tolist()))

    def score(self, predictions: Mapping[Any, Any], dataset: Any) -> dict[str, float]:
        right = [int(p == int(dataset.y[i])) for i, p in predictions.items()]
        if self.wrong and len(dataset) == 12:
            right = [0] * len(right)
        return {"accuracy": sum(right) / len(right)}

    def oracle_score(self, dataset: Any) -> float | None:
        return self._oracle

    def write_predictions(self, predictions: Mapping[Any, Any], dataset: Any, output_dir: Path,
                          split: str) -> list[Path]:
        path = output_dir / f"{split}_predict.json"
        path.write_text(json.dumps({str(k): v for k, v in predictions.items()}))
        return [path]


def _cfg(tmp_path: Path, **changes: Any) -> TrainConfig:
    base = TrainConfig(task="toy", output=str(tmp_path / "run"), train="train", valid="valid", batch_size=8,
                       epochs=2, lr=0.1, optim="sgd", log_every=2, progress=False, seed=1)
    return base.replace(**changes)


def test_first_epoch_saves_best_only_above_the_original_zero(tmp_path: Path):
    result = loop.run(_ToyTask(wrong=True), _cfg(tmp_path), device="cpu")
    run = tmp_path / "run"
    assert not (run / "BEST.pth").exists() and (run / "LAST.pth").is_file()
    assert result["fit"]["best"] == 0.0
    assert (run / "log.log").read_text().endswith("Epoch 1: Valid 0.00\nEpoch 1: Best 0.00\n")


def test_log_text_per_task_losses_and_valid_oracle(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="lxmert")
    loop.run(_ToyTask(oracle=0.875), _cfg(tmp_path), device="cpu")
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    lines = (run / "log.log").read_text().split("\n")
    # The original's log_str: a blank line, then Train / Valid / Best, per epoch.
    assert lines[0] == "" and lines[1].startswith("Epoch 0: Train ") and lines[4] == ""
    assert lines[2] == f"Epoch 0: Valid {history[0]['valid/accuracy'] * 100:0.2f}"
    assert lines[3].startswith("Epoch 0: Best ") and lines[7].startswith("Epoch 1: Best ")
    assert (run / "BEST.pth").is_file()
    messages = [r.getMessage() for r in caplog.records]
    oracle = messages.index("Valid Oracle: 87.50")
    assert oracle < next(i for i, m in enumerate(messages) if m.startswith("epoch 1:"))
    steps = [json.loads(ln) for ln in (run / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(8))
    for s in steps:  # the named parts of every step's loss
        assert s["First"] + s["Second"] == pytest.approx(s["loss"], rel=1e-5)
    assert history[0]["train/loss/First"] == pytest.approx(history[0]["train/loss"] / 2, rel=1e-5)


def test_test_only_predicts_and_checks_its_split_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    task = _ToyTask()
    monkeypatch.setattr(task, "test_splits", lambda name: [("minival", "minival")] if "val" in name else
                        (_ for _ in ()).throw(SplitNameError(f"--test {name!r}: accepted: val")))
    result = loop.run(task, _cfg(tmp_path, test="val"), device="cpu")
    run = tmp_path / "run"
    assert "fit" not in result and (run / "minival_predict.json").is_file()
    assert not (run / "LAST.pth").exists() and not (run / "steps.jsonl").exists()
    assert task.test_calls == ["minival"]

    def no_trainer(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was built before the split name was checked")

    monkeypatch.setattr(loop, "Trainer", no_trainer)
    with pytest.raises(SplitNameError, match="accepted"):
        loop.run(task, _cfg(tmp_path, test="bogus"), device="cpu")


def test_evaluation_only_runs_compute_in_fp32(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert loop.autocast_dtype("auto", cuda, training=True) is torch.bfloat16
    assert loop.autocast_dtype("auto", cuda, training=False) is None
    assert loop.autocast_dtype("bf16", cuda, training=False) is torch.bfloat16  # --amp wins
    assert loop.autocast_dtype("auto", torch.device("cpu"), training=True) is None


def test_trainer_tells_precision_whether_it_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[bool] = []
    real = loop.autocast_dtype
    monkeypatch.setattr(loop, "autocast_dtype", lambda amp, dev, training=True: seen.append(training) or real(
        amp, dev, training))
    task = _ToyTask()
    monkeypatch.setattr(task, "test_splits", lambda name: [(name, name)])
    loop.run(task, _cfg(tmp_path, test="valid"), device="cpu")  # train is set, but --test only predicts
    loop.run(task, _cfg(tmp_path, epochs=1), device="cpu")
    assert seen == [False, True]


# ---- the original's text ------------------------------------------------------------------------------


def test_original_log_text_formats():
    expected = "\nEpoch 0: Train 71.23\nEpoch 0: Valid 69.90\nEpoch 0: Best 69.90\n"
    assert finetune_epoch_text(0, 0.71234, 0.699, 0.699) == expected
    assert finetune_epoch_text(3, 0.5, None, None) == "\nEpoch 3: Train 50.00\n"
    losses = {"Mask_LM": 1.23456, "Matched": 0.69314, "Obj": 2.0, "Attr": 1.0, "Feat": 0.5, "QA": 3.14159}
    assert losses_line(losses) == (
        "The losses are Mask_LM: 1.2346 Matched: 0.6931 Obj: 2.0000 Attr: 1.0000 Feat: 0.5000 QA: 3.1416 ")
    accuracy = qa_accuracy_line(0.25, {"vqa": 0.5, "gqa": 0.125})
    assert accuracy == "Overall Accu 0.2500, gqa Accu 0.1250, vqa Accu 0.5000, "
    train = {"loss": 8.5, **{f"loss/{k}": v for k, v in losses.items()}, "accuracy": 0.25, "accuracy_vqa": 0.25}
    valid = {"loss": 9.0, **{f"loss/{k}": v for k, v in losses.items()}}
    text = pretrain_epoch_text(2, train, valid, tuple(losses))
    assert text.splitlines() == [
        "The training loss for Epoch 2 is 8.5000",
        losses_line(losses),
        "Overall Accu 0.2500, vqa Accu 0.2500, ",
        "The valid loss is 9.0000",
        losses_line(losses),
    ]


def test_oracle_counts_only_answers_of_the_table():
    labels = {1: {"red": 0.6, "rare": 1.0}, 2: {"rare": 1.0}, 3: {"blue": 0.3, "red": 0.9}}
    assert oracle_accuracy(labels, {"red", "blue"}) == pytest.approx((0.6 + 0.0 + 0.9) / 3)
    assert oracle_accuracy(labels) == pytest.approx((1.0 + 1.0 + 0.9) / 3)


def test_tasks_read_test_names_as_the_original():
    from tasks.gqa import GQATask
    from tasks.nlvr2 import NLVR2Task
    from tasks.vqa import VQATask

    cfg = TrainConfig(data_root=str(Path(__file__).resolve().parents[1] / "data"))
    assert VQATask(cfg).test_splits("val") == [("minival", "minival")]
    assert GQATask(cfg).test_splits("testdev_all") == [("testdev", "testdev")]
    assert NLVR2Task(cfg).test_splits("hidden") == [("hidden", "hidden")]
    with pytest.raises(SplitNameError, match="accepted"):
        VQATask(cfg).test_splits("train")


def test_a_test_run_needs_no_pretraining_answer_table(tmp_path: Path) -> None:
    """``vqa_test.bash --load BEST`` on a data root without ``lxmert/all_ans.json``: only --loadLXMERTQA reads
    it. Catches the pretraining table being read (and failing) for every VQA/GQA run that loads weights."""
    import shutil

    from lxrt import LXRTConfig, save_state_dict
    from tasks.models import Classifier
    from tasks.vqa import VQATask

    repo_data = Path(__file__).resolve().parents[1] / "data"
    (tmp_path / "data" / "vqa").mkdir(parents=True)
    for name in ("trainval_ans2label.json", "trainval_label2ans.json"):
        shutil.copy(repo_data / "vqa" / name, tmp_path / "data" / "vqa" / name)
    config = LXRTConfig.tiny(visual_feat_dim=8)
    task = VQATask(TrainConfig(task="vqa", data_root=str(tmp_path / "data"), load=str(tmp_path / "BEST"), model=config))
    saved = Classifier(config, task.answers.num_answers)
    save_state_dict(saved.state_dict(), tmp_path / "BEST.pth")
    model = Classifier(config, task.answers.num_answers)
    task.load_pretrained(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="all_ans.json"):
        task.cfg = task.cfg.replace(load_lxmert_qa=str(tmp_path / "BEST"))
        task.load_pretrained(model)
