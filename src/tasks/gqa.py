"""GQA fine-tuning and testing: ``python -m tasks.gqa --help`` (or ``run/gqa_*.bash``).

Splits: train, valid, testdev (local evaluation), submit (the server's questions). ``--test`` as the
original reads it: a name containing ``submit`` predicts that split into ``submit_predict.json``, a
name containing ``testdev`` evaluates ``testdev`` (both, in that order, when both match). The result
file is a list of ``{"prediction": str, "questionId": str}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from engine.task import PredictSplit, SplitNameError
from lxrt.fileio import atomic_write_text
from tasks.finetune import main as run_main
from tasks.gqa_data import GQADataset
from tasks.presentation import Presentation
from tasks.qa_task import QATask
from tasks.registry import register_task
from tasks.submission import check_complete, register_writer


@register_task
class GQATask(QATask):
    name = "gqa"
    dataset_class = GQADataset
    eval_batch_size = 512
    recipe = "gqa_lxr955"
    description = "Fine-tune / test LXMERT on GQA."
    known_splits = ("train", "valid", "testdev", "testdev_all", "submit")
    server_splits = ("submit",)
    presentation = Presentation(images="one", text="question", output="answers", priority=1)

    @classmethod
    def predict_splits(cls, name: str) -> list[PredictSplit]:
        name = name.strip()
        found = []
        if "submit" in name:
            found.append(PredictSplit(name, "submit"))
        if "testdev" in name:
            found.append(PredictSplit("testdev", "testdev"))
        if not found:
            raise SplitNameError(
                f"--test {name!r} is not a GQA test split; accepted: a name containing 'submit' (submit -> "
                "submit_predict.json) or 'testdev' (testdev -> testdev_predict.json)"
            )
        return found

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--mceLoss", action="store_true", help="softmax cross-entropy loss instead of BCE")

    @classmethod
    def from_args(cls, cfg: TrainConfig, args: argparse.Namespace) -> GQATask:
        return cls(cfg, mce_loss=bool(getattr(args, "mceLoss", False)))


@register_writer("gqa", ".json")
def write_gqa_submission(
    predictions: Mapping[str, str], path: str | Path, expected: Iterable[str] | None = None
) -> Path:
    """GQA result file: a list of ``{"prediction", "questionId"}`` with string question ids."""
    check_complete(predictions, expected, str(path))
    rows = []
    for qid, ans in predictions.items():
        if not isinstance(qid, str):
            raise TypeError(f"GQA questionId must be a string (the server compares strings), got {qid!r}")
        rows.append({"questionId": qid, "prediction": str(ans)})
    return atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True))


register("gqa_lxr955", TrainConfig(
    task="gqa", train="train,valid", valid="testdev", load_lxmert_qa="snap/pretrained/model",
    batch_size=32, optim="bert", lr=1e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))  # fmt: skip
register("gqa_test", TrainConfig(task="gqa", train="", valid="", batch_size=32, lr=1e-5, epochs=4, model=LXR955))

make_task = GQATask.from_args


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(GQATask, argv)


if __name__ == "__main__":
    main()
