"""GQA fine-tuning and testing: ``python -m tasks.gqa --help`` (or ``run/gqa_*.bash``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from tasks.finetune import main as run_main
from tasks.gqa_data import GQADataset
from tasks.qa_task import QATask


class GQATask(QATask):
    name = "gqa"
    dataset_class = GQADataset
    eval_batch_size = 512
    recipe = "gqa_lxr955"
    description = "Fine-tune / test LXMERT on GQA."

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--mceLoss", action="store_true", help="softmax cross-entropy loss instead of BCE")

    @classmethod
    def from_args(cls, cfg: TrainConfig, args: argparse.Namespace) -> GQATask:
        return cls(cfg, mce_loss=bool(getattr(args, "mceLoss", False)))


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
