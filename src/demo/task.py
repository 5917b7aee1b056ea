"""easy-VQA as a task of the shared loop: VQA's model, loss and files over the demo's own data.

The data is what :func:`demo.easy_vqa_data.prepare_easy_vqa` writes under ``<data_root>/easy_vqa``:
``{train,minival,test}.json`` in the VQA record format, the 13-answer tables and one feature store
per image split, named in ``manifest.json``. Scores are the VQA accuracy overall and per
``question_type`` (color, shape, yes/no color, yes/no shape).

Region features are standardized per dimension with the statistics of the training images before
they reach the model. The hand-made region features are far from centred (most of a region's
pixels are the near-white background), so the few dimensions that tell colours apart are a tiny
part of each vector; standardized, a model trained from scratch reads colour within the first
epoch instead of after several (Faster R-CNN features, which the original feeds raw, do not need it).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from demo.easy_vqa_data import image_path
from engine import recipes
from engine.batch import Batch
from engine.config import TrainConfig
from lxrt import LXRTConfig
from tasks.answers import DataFormatError, convert_ans
from tasks.data_common import ImageFeatures, TaskDataset
from tasks.metrics import soft_score_accuracy
from tasks.presentation import ImageSettings, Presentation
from tasks.qa_task import QATask, pretrain_answers
from tasks.registry import register_task
from tasks.vqa import write_vqa_submission
from tasks.vqa_data import VQADataset
from tasks.weights import load_initial_weights

TASK = "easy_vqa"
MANIFEST = "manifest.json"
STATS_SPLIT = "train"
MIN_STD = 1e-2  # dimensions (nearly) constant over the training images are only centred
EXAMPLE_QUESTIONS = ("What color is the shape?", "What shape is in the image?", "Is there a blue shape in the image?",
                     "Does the image not contain a circle?")  # of the page's examples, test images 0, 1, 2, 3


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


def feature_stats(
    features: ImageFeatures, img_ids: Sequence[str], chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (float32, floored at ``MIN_STD``) of every region
    of ``img_ids``, accumulated in float64 over chunks of images."""
    ids = sorted(set(img_ids))
    if not ids:
        raise ValueError("no images to compute feature statistics from")
    total = np.zeros(features.feat_dim)
    squares = np.zeros(features.feat_dim)
    count = 0
    for start in range(0, len(ids), chunk):
        feats, _, mask = features.gather(ids[start : start + chunk], dtype=np.float64)
        rows = feats.reshape(-1, feats.shape[-1]) if mask is None else feats[mask.astype(bool)]
        total += rows.sum(0)
        squares += (rows * rows).sum(0)
        count += len(rows)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, MIN_STD).astype(np.float32)


class StandardizingCollator:
    """A collator whose batches carry ``(feats - mean) / std`` (float32) instead of raw features."""

    def __init__(self, inner: Callable[[list[Any]], Batch], mean: np.ndarray, std: np.ndarray) -> None:
        self.inner = inner
        self.mean = torch.from_numpy(np.asarray(mean, dtype=np.float32))
        self.std = torch.from_numpy(np.asarray(std, dtype=np.float32))

    def __call__(self, examples: list[Any]) -> Batch:
        batch = self.inner(examples)
        device = batch.feats.device  # a store's numpy rows, or --features-on-device
        batch.feats = (batch.feats.float() - self.mean.to(device)) / self.std.to(device)
        if batch.visual_mask is not None:  # padded regions stay zero
            batch.feats *= batch.visual_mask.unsqueeze(-1).to(batch.feats.dtype)
        return batch


@register_task
class EasyVQATask(QATask):
    """VQA's classifier over easy-VQA's 13 answers; accuracy overall and per question type."""

    name = TASK
    aliases = ("demo",)
    dataset_class = EasyVQADataset
    eval_batch_size = 512
    known_splits = ("train", "minival", "test")
    presentation = Presentation(images="one", text="question", output="answers", photos=False)

    _stats: tuple[np.ndarray, np.ndarray] | None = None

    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the region features of the training split's images (computed once)."""
        if self._stats is None:
            train = self.dataset(STATS_SPLIT, train=False)
            self._stats = feature_stats(train.features, [rec["img_id"] for rec in train.data])
        return self._stats

    @classmethod
    def ask_images(cls, run: TrainConfig | None, data_root: Path) -> ImageSettings:
        """The demo's pictures: the extractor settings of ``manifest.json`` and the training images' statistics."""
        path = Path(data_root) / TASK / MANIFEST
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))["settings"]
            extractor, options = settings["extractor"], dict(settings["extractor_options"])
            dtype = settings.get("dtype", "float16")
        except FileNotFoundError:
            raise DataFormatError(f"{path} not found: the demo's data is missing; run `bash run/demo.bash`") from None
        except (ValueError, KeyError, TypeError) as err:
            raise DataFormatError(f"{path}: not a manifest of the demo's data ({err})") from None
        cfg = (run or TrainConfig(task=TASK)).replace(data_root=str(data_root))
        try:
            stats = cls(cfg).feature_stats()
        except (FileNotFoundError, ValueError, OSError) as err:
            raise DataFormatError(f"the demo's training features under {path.parent}: {err}") from None
        return ImageSettings(extractor, options, dtype, stats)

    @classmethod
    def ask_examples(cls) -> list[tuple[str, str]]:
        """easy-VQA test images with a question each (none without the ``easy-vqa`` package)."""
        try:
            return [(str(image_path(f"test_{n}")), q) for n, q in enumerate(EXAMPLE_QUESTIONS)]
        except (ImportError, ValueError):
            return []

    def collator(self, dataset: TaskDataset) -> Callable[[list[Any]], Batch]:
        return StandardizingCollator(super().collator(dataset), *self.feature_stats())

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
    """A small LXMERT for easy-VQA: heads of 16 dimensions, FFN twice the width, short positions.

    Many narrow heads give more chances that one of them learns early to match a colour word of
    the question against the colour of the shape (the yes/no colour questions).
    """
    if hidden < 32 or hidden % 32:
        raise ValueError(f"hidden size must be a positive multiple of 32, got {hidden}")
    return LXRTConfig(
        hidden_size=hidden,
        num_attention_heads=hidden // 16,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        llayers=llayers,
        xlayers=xlayers,
        rlayers=rlayers,
        visual_feat_dim=feat_dim,
    )


# Tuned on minival. The yes/no colour questions (half of the data) are the hard part: the word
# "not" alone answers 88% of them, and a model can sit at that prior for epochs before it learns
# to compare the colour word with the shape's colour. Standardized features, no dropout, 16-d
# heads and this learning rate make it leave that plateau within 1-3 epochs; dropout 0.1 or a
# learning rate of 1e-3 keep it there much longer. The longest question is 13 wordpieces with
# [CLS] and [SEP].
DEMO_RECIPE = recipes.register("easy_vqa_demo", TrainConfig(
    task=TASK, train="train", valid="minival", test="test", from_scratch=True, max_seq_length=14,
    batch_size=64, optim="adamw", lr=6e-4, warmup=0.05, weight_decay=0.01, clip_norm=1.0, epochs=4,
    model=demo_model(),
))  # fmt: skip
