"""VQA and GQA as tasks of the shared loop: answer classification over a fixed answer table."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.report import get_logger
from lxrt.snapshot import AnswerTableId
from tasks.answers import AnswerTable, PretrainAnswerTable, convert_ans
from tasks.base import FinetuneTask
from tasks.data_common import QADataset, TaskDataset
from tasks.metrics import oracle_accuracy
from tasks.weights import load_initial_weights


class QATask(FinetuneTask):
    """Shared by VQA and GQA: soft-score targets, BCE (x answers) loss (``mce_loss``: softmax
    cross-entropy on the top answer), argmax answer."""

    dataset_class: type[QADataset]
    metrics = {"accuracy": "soft_score"}
    eval_batch_size = 1024
    answers_from: ClassVar[str | None] = None
    """The data folder whose ``trainval_{ans2label,label2ans}.json`` is the answer table (None: the
    task's own); a task over VQA's answers with other splits names VQA's folder here."""

    def __init__(self, cfg: TrainConfig, mce_loss: bool = False) -> None:
        super().__init__(cfg)
        self.mce_loss = mce_loss
        self.answers = AnswerTable.for_task(self.answer_folder(), cfg.data_root)

    @classmethod
    def answer_folder(cls) -> str:
        return cls.answers_from or cls.folder()

    def answer_table_id(self) -> AnswerTableId:
        return AnswerTableId.of(self.answers.label2ans, f"{self.answer_folder()}/trainval_label2ans.json")

    def options_dict(self) -> dict[str, Any]:
        return {"mce_loss": self.mce_loss}

    @property
    def num_classes(self) -> int:
        return self.answers.num_answers

    def make_dataset(self, splits: str, topk: int | None, train: bool = False) -> TaskDataset:
        return self.dataset_class(splits, root=self.cfg.data_root, topk=topk, answers=self.answers)

    def load_pretrained(self, model: nn.Module) -> None:
        # The pretraining answer table is read only when --loadLXMERTQA maps its head (a test run needs none).
        qa_tables = (self.answers.label2ans, pretrain_answers(self.cfg.data_root), convert_ans) \
            if self.cfg.load_lxmert_qa else None
        load_initial_weights(model, self.cfg, qa_tables=qa_tables)

    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        target = batch.targets["target"]
        n = output.shape[-1]
        if self.mce_loss:
            loss = F.cross_entropy(output.float(), target.argmax(-1), ignore_index=-1) * n
        else:
            loss = F.binary_cross_entropy_with_logits(output.float(), target.float()) * n
        return loss, {}

    def prediction(self, index: int) -> str:
        return self.answers.answer(index)

    def oracle_score(self, dataset: TaskDataset) -> float | None:
        if not dataset.has_labels or not len(dataset):
            return None
        return oracle_accuracy({rec[dataset.id_key]: rec["label"] for rec in dataset.data}, self.answers.ans2label)

    def write_predictions(
        self, predictions: Mapping[Any, str], dataset: TaskDataset, output_dir: Path, split: str
    ) -> list[Path]:
        files = super().write_predictions(predictions, dataset, output_dir, split)
        if dataset.has_labels:
            labels = {rec[dataset.id_key]: rec["label"] for rec in dataset.data}
            oracle = oracle_accuracy(labels, self.answers.ans2label)
            get_logger().info(f"{split}: oracle accuracy {oracle * 100:.2f}")
        return files


@cache
def pretrain_answers(root: str) -> list[str]:
    """The 9500 answers of LXMERT's pretraining QA head, in label order."""
    return PretrainAnswerTable(Path(root) / "lxmert" / "all_ans.json").answers
