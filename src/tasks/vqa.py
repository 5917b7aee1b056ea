"""VQA 2.0 fine-tuning and testing: ``python -m tasks.vqa --help`` (or ``run/vqa_*.bash``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from engine.config import TrainConfig
from tasks.finetune import main as run_main
from tasks.qa_task import QATask
from tasks.vqa_data import VQADataset


class VQATask(QATask):
    name = "vqa"
    dataset_class = VQADataset


def make_task(cfg: TrainConfig, args: argparse.Namespace) -> VQATask:
    return VQATask(cfg)


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(make_task, "vqa_lxr955", "Fine-tune / test LXMERT on VQA 2.0.", argv)


if __name__ == "__main__":
    main()
