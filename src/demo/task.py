"""easy-VQA as a task of the shared loop: VQA's model, loss and files over the demo's own data.

The data is what :func:`demo.easy_vqa_data.prepare_easy_vqa` writes under ``<data_root>/easy_vqa``:
``{train,minival,test}.json`` in the VQA record format, the 13-answer tables and one feature store
per image split, named in ``manifest.json``. Scores are the VQA accuracy overall and per
``question_type`` (color, shape, yes/no color, yes/no shape).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from engine import recipes
from engine.config import TrainConfig
from lxrt import LXRTConfig
from tasks.answers import DataFormatError, convert_ans
from tasks.data_common import TaskDataset
from tasks.finetune import load_initial_weights
from tasks.metrics import soft_score_accuracy
from tasks.qa_task import QATask, pretrain_answers
from tasks.submission import write_vqa_submission
from tasks.vqa_data import VQADataset

TASK = "easy_vqa"
MANIFEST = "manifest.json"


def type_key(question_type: str) -> str:
    """A metric-name-safe form of a question type: ``"yes/no color"`` -> ``"yes_no_color"``."""
    return re.sub(r"[^a-z0-9]+", "_", question_type.lower()).strip("_")


def accuracy_by_type(
    predictions: Mapping[Any, str], records: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """``{"accuracy": overall, "accuracy/<type>": ...}`` of the predicted questions among ``records``
    (VQA records with ``question_id``, ``label`` and ``question_type``)."""
    labels = {rec["question_id"]: rec["label"] for rec in records}
    by_type: dict[str, dict[Any, str]] = defaultdict(dict)
    for rec in records:
        qid = rec["question_id"]
        if qid in predictions:
            by_type[type_key(rec["question_type"])][qid] = predictions[qid]
    metrics = {"accuracy": soft_score_accuracy(predictions, labels)}
    for key, preds in sorted(by_type.items()):
        metrics[f"accuracy/{key}"] = soft_score_accuracy(preds, labels)
    return metrics


def split_stores(folder: Path) -> dict[str, Path]:
    """Split -> feature store directory, as listed in ``<folder>/manifest.json``."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: prepare the data first (python -m demo.run_demo, or "
            "demo.easy_vqa_data.prepare_easy_vqa)"
        ) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    stores = manifest.get("stores") if isinstance(manifest, dict) else None
    if not isinstance(stores, dict) or not all(isinstance(v, str) for v in stores.values()):
        raise DataFormatError(f"{path}: expected a 'stores' object mapping split names to store folders")
    return {split: folder / name for split, name in stores.items()}


class EasyVQADataset(VQADataset):
    """Questions of ``<root>/easy_vqa/<split>.json``; each split reads the store its manifest names."""

    task = TASK

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        folder = Path(root) / TASK
        stores = split_stores(folder)
        files: dict[Path, int | None] = {}
        for split in splits:
            if split not in stores:
                raise ValueError(
                    f"{folder / MANIFEST} names no feature store for split {split!r} (has {sorted(stores)})"
                )
            files[stores[split]] = topk
        return files

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        super().check_record(rec, path, index)
        if not isinstance(rec.get("question_type"), str):
            raise DataFormatError(f"{path}: record {index} has no string 'question_type' field")


class EasyVQATask(QATask):
    """VQA's classifier over easy-VQA's 13 answers; accuracy overall and per question type."""

    name = TASK
    dataset_class = EasyVQADataset
    eval_batch_size = 512

    def load_pretrained(self, model: nn.Module) -> None:
        # The 9500-answer pretraining table is only read when a pretrained QA head is loaded.
        tables = None
        if self.cfg.load_lxmert_qa:
            tables = (self.answers.label2ans, pretrain_answers(self.cfg.data_root), convert_ans)
        load_initial_weights(model, self.cfg, qa_tables=tables)

    def score(self, predictions: Mapping[Any, str], dataset: TaskDataset) -> dict[str, float]:
        if not dataset.has_labels or not predictions:
            return {}
        return accuracy_by_type(predictions, dataset.data)

    def write_predictions(
        self, predictions: Mapping[Any, str], dataset: TaskDataset, output_dir: Path, split: str
    ) -> list[Path]:
        expected = [rec[dataset.id_key] for rec in dataset.data]
        path = Path(output_dir) / f"{split}_predict.json"
        return [write_vqa_submission(predictions, path, expected=expected)]


def demo_model(
    hidden: int = 128,
    llayers: int = 2,
    xlayers: int = 2,
    rlayers: int = 1,
    dropout: float = 0.0,
    feat_dim: int = 268,
) -> LXRTConfig:
    """A small LXMERT for easy-VQA: head size 32, FFN twice the width, short positions."""
    if hidden < 32 or hidden % 32:
        raise ValueError(f"hidden size must be a positive multiple of 32, got {hidden}")
    return LXRTConfig(
        hidden_size=hidden,
        num_attention_heads=hidden // 32,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        llayers=llayers,
        xlayers=xlayers,
        rlayers=rlayers,
        visual_feat_dim=feat_dim,
    )


# Tuned on minival: without dropout and at this learning rate the yes/no colour questions (half of
# the data; the word "not" alone answers 88% of them) are solved within 3-4 epochs; with dropout
# 0.1 or a learning rate of 1e-3 they stay at that prior for several epochs. The longest question
# is 13 wordpieces with [CLS] and [SEP].
DEMO_RECIPE = recipes.register("easy_vqa_demo", TrainConfig(
    task=TASK, train="train", valid="minival", test="test", from_scratch=True, max_seq_length=14,
    batch_size=64, optim="adamw", lr=6e-4, warmup=0.05, weight_decay=0.01, clip_norm=1.0, epochs=4,
    model=demo_model(),
))  # fmt: skip
