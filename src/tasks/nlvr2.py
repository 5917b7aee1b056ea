"""NLVR2 fine-tuning and testing: ``python -m tasks.nlvr2 --help`` (or ``run/nlvr2_*.bash``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.task import Task
from lxrt.tokenization import LXRTTokenizer
from tasks.data_common import subset_topk
from tasks.finetune import load_initial_weights
from tasks.finetune import main as run_main
from tasks.metrics import nlvr2_accuracy, nlvr2_consistency
from tasks.models import NLVR2Model
from tasks.nlvr2_data import NLVR2Dataset
from tasks.qa_task import model_config_for
from tasks.submission import write_predictions


class NLVR2Task(Task):
    """True/false about a sentence and a pair of images; cross-entropy over 2 classes."""

    name = "nlvr2"
    eval_batch_size = 512

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.tokenizer = LXRTTokenizer(max_length=cfg.max_seq_length)
        self._datasets: dict[tuple[str, bool], NLVR2Dataset] = {}

    def dataset(self, splits: str, train: bool, full: bool = False) -> NLVR2Dataset:
        key = (splits, full)
        if key not in self._datasets:
            topk = None if full else subset_topk(self.cfg.tiny, self.cfg.fast)
            self._datasets[key] = NLVR2Dataset(splits, root=self.cfg.data_root, topk=topk)
        return self._datasets[key]

    def collator(self, dataset: NLVR2Dataset) -> Callable[[list[Any]], Batch]:
        return dataset.collator(self.tokenizer, max_length=self.cfg.max_seq_length, feat_dtype=None)

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        first = (
            self.dataset(cfg.train, True) if cfg.train
            else self.dataset(cfg.test, False, full=True) if cfg.test
            else self.dataset(cfg.valid, False)
        )
        return NLVR2Model(model_config_for(cfg, first), pooled_only=cfg.pooled_only)

    def load_pretrained(self, model: nn.Module) -> None:
        load_initial_weights(model, self.cfg)

    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        return F.cross_entropy(output.float(), batch.targets["label"]), {}

    def predict(self, output: Tensor, batch: Batch) -> dict[str, int]:
        return dict(zip(batch.ids, output.argmax(-1).tolist()))

    def prediction_codes(self, output: Tensor, batch: Batch) -> Tensor:
        return output.argmax(-1)

    def decode_predictions(self, codes: list[int], ids: list[Any]) -> dict[str, int]:
        return dict(zip(ids, codes))

    def score(self, predictions: Mapping[str, int], dataset: NLVR2Dataset) -> dict[str, float]:
        if not dataset.has_labels or not predictions:
            return {}
        labels = {rec["identifier"]: rec["label"] for rec in dataset.data}
        return {
            "accuracy": nlvr2_accuracy(predictions, labels),
            "consistency": nlvr2_consistency(predictions, labels),
        }

    def write_predictions(
        self, predictions: Mapping[str, int], dataset: NLVR2Dataset, output_dir: Path, split: str
    ) -> list[Path]:
        expected = [rec["identifier"] for rec in dataset.data]
        return [write_predictions("nlvr2", predictions, output_dir, split, expected=expected)]


def make_task(cfg: TrainConfig, args: argparse.Namespace) -> NLVR2Task:
    return NLVR2Task(cfg)


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(make_task, "nlvr2_lxr955", "Fine-tune / test LXMERT on NLVR2.", argv)


if __name__ == "__main__":
    main()
