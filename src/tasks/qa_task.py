"""VQA and GQA as tasks of the shared loop: answer classification over a fixed answer table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.report import get_logger
from engine.task import Task
from lxrt import LXRTConfig
from lxrt.tokenization import LXRTTokenizer
from tasks.answers import AnswerTable, PretrainAnswerTable, convert_ans
from tasks.data_common import TaskDataset, subset_topk
from tasks.finetune import load_initial_weights
from tasks.metrics import oracle_accuracy, soft_score_accuracy
from tasks.models import QAModel
from tasks.submission import write_predictions


class QATask(Task):
    """Shared by VQA and GQA: soft-score targets, BCE (x answers) loss, argmax answer."""

    dataset_class: type[TaskDataset]
    eval_batch_size = 1024

    def __init__(self, cfg: TrainConfig, mce_loss: bool = False) -> None:
        self.cfg = cfg
        self.mce_loss = mce_loss
        self.answers = AnswerTable.for_task(self.name, cfg.data_root)
        self.tokenizer = LXRTTokenizer(max_length=cfg.max_seq_length)
        self._datasets: dict[tuple[str, bool], TaskDataset] = {}

    def options_dict(self) -> dict[str, Any]:
        return {"mce_loss": self.mce_loss}

    # -- data
    def dataset(self, splits: str, train: bool, full: bool = False) -> TaskDataset:
        key = (splits, full)
        if key not in self._datasets:
            topk = None if full else subset_topk(self.cfg.tiny, self.cfg.fast)
            self._datasets[key] = self.dataset_class(
                splits, root=self.cfg.data_root, topk=topk, answers=self.answers
            )
        return self._datasets[key]

    def collator(self, dataset: TaskDataset) -> Callable[[list[Any]], Batch]:
        # Features stay in the store's dtype (fp16 by default); the model casts on its device.
        return dataset.collator(self.tokenizer, max_length=self.cfg.max_seq_length, feat_dtype=None)

    def _first_dataset(self) -> TaskDataset:
        cfg = self.cfg
        if cfg.train:
            return self.dataset(cfg.train, train=True)
        if cfg.test:
            return self.dataset(cfg.test, train=False, full=True)
        return self.dataset(cfg.valid, train=False)

    # -- model
    def build_model(self) -> nn.Module:
        config = model_config_for(self.cfg, self._first_dataset())
        return QAModel(config, self.answers.num_answers, pooled_only=self.cfg.pooled_only)

    def load_pretrained(self, model: nn.Module) -> None:
        load_initial_weights(model, self.cfg, qa_tables=(self.answers.label2ans, pretrain_answers(self.cfg.data_root),
                                                         convert_ans))

    # -- loss, predictions, metric, files
    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        target = batch.targets["target"]
        n = output.shape[-1]
        if self.mce_loss:
            loss = F.cross_entropy(output.float(), target.argmax(-1), ignore_index=-1) * n
        else:
            loss = F.binary_cross_entropy_with_logits(output.float(), target.float()) * n
        return loss, {}

    def predict(self, output: Tensor, batch: Batch) -> dict[Any, str]:
        return self.decode_predictions(output.argmax(-1).tolist(), batch.ids)

    def prediction_codes(self, output: Tensor, batch: Batch) -> Tensor:
        return output.argmax(-1)

    def decode_predictions(self, codes: list[int], ids: list[Any]) -> dict[Any, str]:
        return {qid: self.answers.answer(i) for qid, i in zip(ids, codes)}

    def score(self, predictions: Mapping[Any, str], dataset: TaskDataset) -> dict[str, float]:
        if not dataset.has_labels or not predictions:
            return {}
        labels = {rec[dataset.id_key]: rec["label"] for rec in dataset.data}
        return {"accuracy": soft_score_accuracy(predictions, labels)}

    def write_predictions(
        self, predictions: Mapping[Any, str], dataset: TaskDataset, output_dir: Path, split: str
    ) -> list[Path]:
        expected = [rec[dataset.id_key] for rec in dataset.data]
        files = [write_predictions(self.name, predictions, output_dir, split, expected=expected)]
        if dataset.has_labels:
            labels = {rec[dataset.id_key]: rec["label"] for rec in dataset.data}
            get_logger().info(f"{split}: oracle accuracy {oracle_accuracy(labels) * 100:.2f}")
        return files


@cache
def pretrain_answers(root: str) -> list[str]:
    """The 9500 answers of LXMERT's pretraining QA head, in label order."""
    return PretrainAnswerTable(Path(root) / "lxmert" / "all_ans.json").answers


def model_config_for(cfg: TrainConfig, dataset: TaskDataset) -> LXRTConfig:
    """The run's model config with the feature width of the data (logged when they differ)."""
    width = dataset.features.feat_dim
    if width != cfg.model.visual_feat_dim:
        get_logger().info(
            f"features of {dataset.name} are {width}-d: model visual_feat_dim {cfg.model.visual_feat_dim} -> {width}"
        )
        return cfg.model.replace(visual_feat_dim=width)
    return cfg.model
