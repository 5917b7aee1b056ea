"""VQA 2.0 fine-tuning and testing: ``python -m tasks.vqa --help`` (or ``run/vqa_*.bash``).

Splits: train, nominival, minival (valid: the first 5000 val2014 images), test (test2015, for the
EvalAI server). ``--test`` as the original reads it: a name containing ``test`` predicts that split
into ``test_predict.json``; otherwise a name containing ``val`` evaluates ``minival``. The result
file is a list of ``{"answer": str, "question_id": int}`` (indent 4, sorted keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from engine.task import PredictSplit, SplitNameError
from lxrt.fileio import atomic_write_text
from tasks.finetune import main as run_main
from tasks.presentation import Presentation
from tasks.qa_task import QATask
from tasks.registry import register_task
from tasks.submission import check_complete, register_writer
from tasks.vqa_data import VQADataset


@register_task
class VQATask(QATask):
    name = "vqa"
    dataset_class = VQADataset
    recipe = "vqa_lxr955"
    description = "Fine-tune / test LXMERT on VQA 2.0."
    known_splits = ("train", "nominival", "minival", "valid", "test")
    server_splits = ("test",)
    presentation = Presentation(images="one", text="question", output="answers", priority=2)

    @classmethod
    def predict_splits(cls, name: str) -> list[PredictSplit]:
        name = name.strip()
        if "test" in name:
            return [PredictSplit(name, "test")]
        if "val" in name:
            return [PredictSplit("minival", "minival")]
        raise SplitNameError(
            f"--test {name!r} is not a VQA test split; accepted: a name containing 'test' (e.g. test -> "
            "test_predict.json) or 'val' (minival -> minival_predict.json)"
        )


@register_writer("vqa", ".json")
def write_vqa_submission(
    predictions: Mapping[int, str], path: str | Path, expected: Iterable[int] | None = None
) -> Path:
    """VQA result file: a list of ``{"answer", "question_id"}`` with integer question ids."""
    check_complete(predictions, expected, str(path))
    rows = []
    for qid, ans in predictions.items():
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise TypeError(f"VQA question_id must be an int, got {qid!r}")
        rows.append({"question_id": qid, "answer": str(ans)})
    return atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True))


register("vqa_lxr955", TrainConfig(
    task="vqa", train="train,nominival", valid="minival", load_lxmert_qa="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))  # fmt: skip
register("vqa_test", TrainConfig(task="vqa", train="", valid="", batch_size=32, lr=5e-5, epochs=4, model=LXR955))

make_task = VQATask.from_args


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(VQATask, argv)


if __name__ == "__main__":
    main()
