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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.report import get_logger
from engine.task import Task
from lxrt import CheckpointError, LXRTConfig, resolve_checkpoint
from lxrt.snapshot import AnswerTableId, SnapshotFacts, read_facts
from lxrt.tokenizer import LXRTTokenizer
from tasks.completeness import check_server_split, note_incomplete, submission_ids
from tasks.data_common import TaskDataset, subset_topk
from tasks.metrics import metric
from tasks.models import Classifier
from tasks.presentation import ImageSettings, Presentation
from tasks.submission import write_predictions
from tasks.weights import load_initial_weights


class FinetuneTask(Task):
    """A classification task over ``dataset_class`` records; see the module docstring."""

    dataset_class: ClassVar[type[TaskDataset]]
    metrics: ClassVar[Mapping[str, str]] = {"accuracy": "exact_match"}
    """Reported metric -> registered metric (``tasks.metrics.metric``); ``main_metric`` selects BEST."""
    recipe: ClassVar[str] = ""
    """The recipe ``python -m tasks.<name>`` runs without ``--recipe``."""
    description: ClassVar[str] = ""
    presentation: ClassVar[Presentation | None] = None
    """How ``ask`` and the page present the task (None: they do not)."""
    model_class: ClassVar[Callable[[LXRTConfig], nn.Module] | None] = None
    """The task's own model, built from the encoder config (None: the classifier over ``num_classes``)."""
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

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return cls.dataset_class.feature_files(splits, root, topk)

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
    def make_dataset(self, splits: str, topk: int | None, train: bool = False) -> TaskDataset:
        """A new dataset of ``splits`` (``topk``: the ``--tiny``/``--fast`` subset size or None); ``train``
        asks for the training view (a task whose training examples differ from its evaluation examples,
        such as retrieval's sampled negatives against its whole gallery, builds them here)."""
        return self.dataset_class(splits, root=self.cfg.data_root, topk=topk)

    def dataset(self, splits: str, train: bool, full: bool = False) -> TaskDataset:
        key = (splits, train, full)
        if key not in self._datasets:
            topk = None if full else subset_topk(self.cfg.tiny, self.cfg.fast)
            self._datasets[key] = self.make_dataset(splits, topk, train=train)
            if full:  # a server split is complete or the run stops here (tasks.completeness)
                check_server_split(self, self._datasets[key], self.cfg.allow_missing, self.cfg.output)
        return self._datasets[key]

    def collator(self, dataset: TaskDataset) -> Callable[[list[Any]], Batch]:
        # Features stay in the store's dtype (fp16 by default); the model casts on its device.
        return dataset.collator(self.tokenizer, max_length=self.cfg.max_seq_length, feat_dtype=None)

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
        config = model_config_for(self.cfg, self.first_dataset(), self.load_facts())
        return Classifier(config, self.num_classes, pooled_only=self.cfg.pooled_only, images_per_example=images)

    def load_pretrained(self, model: nn.Module) -> None:
        load_initial_weights(model, self.cfg)

    def answer_table_id(self) -> AnswerTableId | None:
        """The identity of the answer table the head's rows follow (None: the classes are the task's own)."""
        return None

    def snapshot_facts(self, model: nn.Module) -> SnapshotFacts:
        return SnapshotFacts(
            task=self.name,
            model=model.config,
            num_outputs=self.num_classes,
            answers=self.answer_table_id(),
            recipe=self.cfg.recipe,
            images_per_example=len(self.dataset_class.image_keys),
            max_seq_length=self.cfg.max_seq_length,
        )

    # -- asking a snapshot (``ask`` and the page), from its facts alone: no run, no data
    @classmethod
    def ask_model(cls, config: LXRTConfig, num_outputs: int) -> nn.Module:
        """The model a snapshot of this task loads into: ``model_class(config)``, else the classifier."""
        if cls.model_class is not None:
            return cls.model_class(config)
        return Classifier(config, num_outputs, pooled_only=True, images_per_example=len(cls.dataset_class.image_keys))

    @classmethod
    def answer_folder(cls) -> str | None:
        """The data folder of the answer table the head's rows follow (None: the task's classes are fixed)."""
        return None

    @classmethod
    def output_classes(cls) -> tuple[str, ...] | None:
        """The names of the head's outputs when the task fixes them (its dataset's ``label_classes``)."""
        return cls.dataset_class.label_classes

    @classmethod
    def ask_images(cls, run: TrainConfig | None, data_root: Path) -> ImageSettings | None:
        """How pictures become this task's features when they are not the detector's (None: they are)."""
        return None

    @classmethod
    def ask_examples(cls) -> list[tuple[str, str]]:
        """``(image file, text)`` examples the page offers for models of this task (none by default)."""
        return []

    def load_facts(self) -> SnapshotFacts | None:
        """The facts of the ``--load`` snapshot, checked against this run (None: no ``--load``, or a
        snapshot without facts, such as the original's)."""
        if not self.cfg.load:
            return None
        if not hasattr(self, "_load_facts"):
            file = resolve_checkpoint(self.cfg.load, suffixes=(".pth", ""))
            facts = read_facts(file)
            if facts is not None:
                check_snapshot_facts(facts, self.name, self.num_classes, self.answer_table_id(), file)
            self._load_facts = facts
        return self._load_facts

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
        return {rec[dataset.id_key]: rec[dataset.label_key] for rec in dataset.data}

    def score(self, predictions: Mapping[Any, Any], dataset: TaskDataset) -> dict[str, float]:
        if not dataset.has_labels or not predictions:
            return {}
        labels = self.labels(dataset)
        return {key: metric(name)(predictions, labels) for key, name in self.metrics.items()}

    def write_predictions(
        self, predictions: Mapping[Any, Any], dataset: TaskDataset, output_dir: Path, split: str
    ) -> list[Path]:
        expected = submission_ids(self, dataset, self.cfg.allow_missing)
        written = write_predictions(self.name, predictions, output_dir, split, expected=expected)
        note_incomplete(self, dataset, written)
        return [written]


def check_snapshot_facts(
    facts: SnapshotFacts, task: str, num_outputs: int, answers: AnswerTableId | None, file: Path
) -> None:
    """Stop when a snapshot is of another task, or its head follows another answer table."""
    if facts.task != task:
        raise CheckpointError(f"{file} is a snapshot of task {facts.task!r} (its facts file says so), not {task!r}")
    if facts.num_outputs != num_outputs:
        raise CheckpointError(
            f"{file}: its head has {facts.num_outputs} outputs, this run's {task} head {num_outputs}"
        )
    if answers is not None and facts.answers is not None and facts.answers.sha256 != answers.sha256:
        raise CheckpointError(
            f"{file} was trained on answer table {facts.answers.name} ({facts.answers.count} answers, sha256 "
            f"{facts.answers.sha256[:12]}), this run reads {answers.name} ({answers.count}, {answers.sha256[:12]}): "
            "its rows would mean other answers"
        )


def model_config_for(cfg: TrainConfig, dataset: TaskDataset, facts: SnapshotFacts | None = None) -> LXRTConfig:
    """The model config: the ``--load`` snapshot's when its facts give one, else the run's, with the
    feature width of the data (logged when they differ)."""
    log = get_logger()
    base = cfg.model
    if facts is not None and facts.model != cfg.model:
        log.info(f"model sizes from the facts of the --load snapshot: {facts.model}")
        base = facts.model
    width = dataset.features.feat_dim
    if width != base.visual_feat_dim:
        if facts is not None:
            raise CheckpointError(
                f"--load {cfg.load}: the snapshot reads {base.visual_feat_dim}-d region features, "
                f"{dataset.name}'s are {width}-d"
            )
        log.info(f"features of {dataset.name} are {width}-d: model visual_feat_dim {base.visual_feat_dim} -> {width}")
        return base.replace(visual_feat_dim=width)
    return base
