"""The base of every fine-tuning task: a sentence with one or more images -> one of N classes.

``FinetuneTask`` implements the loop's ``Task`` contract once: dataset caching (one dataset per
split list, ``--tiny``/``--fast`` applied except for test splits), the model built for the feature
width of the first dataset the run reads, BERT / ``--loadLXMERT`` / ``--load`` initialization,
cross-entropy over integer class targets, argmax predictions, the metrics it names and the
submission writer registered under its name. A task sets a few class attributes and overrides
only what differs (VQA/GQA: soft-score targets and the answer table; see ``tasks/qa_task.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.report import get_logger
from engine.task import Task
from lxrt import LXRTConfig
from lxrt.tokenization import LXRTTokenizer
from tasks.completeness import check_server_split, note_incomplete, submission_ids
from tasks.data_common import TaskDataset, subset_topk
from tasks.finetune import load_initial_weights
from tasks.metrics import metric
from tasks.models import Classifier
from tasks.splits import resolve_test_splits
from tasks.submission import write_predictions


class FinetuneTask(Task):
    """A classification task over ``dataset_class`` records; see the module docstring."""

    dataset_class: ClassVar[type[TaskDataset]]
    metrics: ClassVar[Mapping[str, str]] = {"accuracy": "exact_match"}
    """Reported metric -> registered metric (``tasks.metrics.metric``); ``main_metric`` selects BEST."""
    recipe: ClassVar[str] = ""
    """The recipe ``python -m tasks.<name>`` runs without ``--recipe``."""
    description: ClassVar[str] = ""
    eval_batch_size = 512

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.tokenizer = LXRTTokenizer(max_length=cfg.max_seq_length)
        self._datasets: dict[tuple[str, bool], TaskDataset] = {}

    @property
    def num_classes(self) -> int:
        """Outputs of the classifier: the dataset's ``label_classes`` (tasks without them set it)."""
        classes = self.dataset_class.label_classes
        if classes is None:
            raise NotImplementedError(f"{type(self).__name__} must set num_classes (its dataset has no label_classes)")
        return len(classes)

    # -- command line
    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Declare the task's own flags on ``group`` (none by default)."""

    @classmethod
    def from_args(cls, cfg: TrainConfig, args: argparse.Namespace) -> FinetuneTask:
        """The task for a run; reads its own flags from ``args`` (absent ones take their defaults)."""
        return cls(cfg)

    def options_dict(self) -> dict[str, Any]:
        """The task's own options, printed by ``--print-config``."""
        return {}

    # -- data
    def make_dataset(self, splits: str, topk: int | None) -> TaskDataset:
        """A new dataset of ``splits`` (``topk``: the ``--tiny``/``--fast`` subset size or None)."""
        return self.dataset_class(splits, root=self.cfg.data_root, topk=topk)

    def dataset(self, splits: str, train: bool, full: bool = False) -> TaskDataset:
        key = (splits, full)
        if key not in self._datasets:
            topk = None if full else subset_topk(self.cfg.tiny, self.cfg.fast)
            self._datasets[key] = self.make_dataset(splits, topk)
            if full:  # a server split is complete or the run stops here (tasks.completeness)
                check_server_split(self.name, self._datasets[key], self.cfg.allow_missing, self.cfg.output)
        return self._datasets[key]

    def collator(self, dataset: TaskDataset) -> Callable[[list[Any]], Batch]:
        # Features stay in the store's dtype (fp16 by default); the model casts on its device.
        return dataset.collator(self.tokenizer, max_length=self.cfg.max_seq_length, feat_dtype=None)

    def test_splits(self, name: str) -> list[tuple[str, str]]:
        """``--test name`` as the original reads it: (split to load, ``<output>_predict`` stem) pairs."""
        return [(s.load, s.output) for s in resolve_test_splits(self.name, name)]

    def first_dataset(self) -> TaskDataset:
        """The dataset the run reads first (test in a test run, which only predicts; else train, else
        valid): it fixes the feature width."""
        cfg = self.cfg
        if cfg.test:
            return self.dataset(self.test_splits(cfg.test)[0][0], train=False, full=True)
        if cfg.train:
            return self.dataset(cfg.train, train=True)
        return self.dataset(cfg.valid, train=False)

    # -- model
    def build_model(self) -> nn.Module:
        images = len(self.dataset_class.image_keys)
        config = model_config_for(self.cfg, self.first_dataset())
        return Classifier(config, self.num_classes, pooled_only=self.cfg.pooled_only, images_per_example=images)

    def load_pretrained(self, model: nn.Module) -> None:
        load_initial_weights(model, self.cfg)

    # -- loss, predictions, metrics, files
    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        return F.cross_entropy(output.float(), batch.targets["label"]), {}

    def prediction(self, index: int) -> Any:
        """What class ``index`` is written as: its name when the dataset has ``label_classes``."""
        classes = self.dataset_class.label_classes
        return index if classes is None else classes[index]

    def predict(self, output: Tensor, batch: Batch) -> dict[Any, Any]:
        return self.decode_predictions(output.argmax(-1).tolist(), batch.ids)

    def prediction_codes(self, output: Tensor, batch: Batch) -> Tensor:
        return output.argmax(-1)

    def decode_predictions(self, codes: list[int], ids: list[Any]) -> dict[Any, Any]:
        return {i: self.prediction(c) for i, c in zip(ids, codes)}

    def labels(self, dataset: TaskDataset) -> dict[Any, Any]:
        """Example id -> ``label`` of a labelled dataset."""
        return {rec[dataset.id_key]: rec["label"] for rec in dataset.data}

    def score(self, predictions: Mapping[Any, Any], dataset: TaskDataset) -> dict[str, float]:
        if not dataset.has_labels or not predictions:
            return {}
        labels = self.labels(dataset)
        return {key: metric(name)(predictions, labels) for key, name in self.metrics.items()}

    def write_predictions(
        self, predictions: Mapping[Any, Any], dataset: TaskDataset, output_dir: Path, split: str
    ) -> list[Path]:
        expected = submission_ids(self.name, dataset, self.cfg.allow_missing)
        written = write_predictions(self.name, predictions, output_dir, split, expected=expected)
        note_incomplete(self.name, dataset, written)
        return [written]


def model_config_for(cfg: TrainConfig, dataset: TaskDataset) -> LXRTConfig:
    """The run's model config with the feature width of the data (logged when they differ)."""
    width = dataset.features.feat_dim
    if width != cfg.model.visual_feat_dim:
        get_logger().info(
            f"features of {dataset.name} are {width}-d: model visual_feat_dim {cfg.model.visual_feat_dim} -> {width}"
        )
        return cfg.model.replace(visual_feat_dim=width)
    return cfg.model
