"""GQA fine-tuning and testing: ``python -m tasks.gqa --help`` (or ``run/gqa_*.bash``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from engine.config import TrainConfig
from tasks.finetune import main as run_main
from tasks.gqa_data import GQADataset
from tasks.qa_task import QATask


class GQATask(QATask):
    name = "gqa"
    dataset_class = GQADataset
    eval_batch_size = 512


def make_task(cfg: TrainConfig, args: argparse.Namespace) -> GQATask:
    return GQATask(cfg, mce_loss=bool(args.mceLoss))


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(make_task, "gqa_lxr955", "Fine-tune / test LXMERT on GQA.", argv)


if __name__ == "__main__":
    main()
