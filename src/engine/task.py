"""What a task gives the training loop: data, model, loss, predictions, metric and output files.

The loop (``engine.loop``) never knows which task it runs; VQA, GQA, NLVR2 and pretraining each
implement this interface in a small module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from lxrt.snapshot import SnapshotFacts

from .batch import Batch
from .original_log import INITIAL_BEST_LOSS, INITIAL_BEST_SCORE, finetune_epoch_text


@dataclass(frozen=True)
class PredictSplit:
    """What ``--test NAME`` reads and writes: ``load``, the split(s) read from the task's data folder;
    ``output``, the ``<output>_predict`` file stem."""

    load: str
    output: str


class SplitNameError(ValueError):
    """A ``--train``/``--valid``/``--test`` name the task does not accept."""


class Task(ABC):
    """One vision-and-language task plugged into the shared loop.

    Besides the methods the loop calls, a task declares what it knows about its data, so that the
    shared code never keeps a table keyed by task name: ``data_folder`` (under the data root),
    ``known_splits`` (the ``--train``/``--valid`` names; None: any), ``server_splits`` (splits whose
    predictions go to an evaluation server and must be complete) and ``predict_splits`` (how a
    ``--test`` name is read, as the original reads it).
    """

    name: str = "task"
    data_folder: str | None = None
    """Folder of the task's files under the data root (None: the task's name)."""
    known_splits: tuple[str, ...] | None = None
    server_splits: tuple[str, ...] = ()
    main_metric: str = "accuracy"
    """Key of ``score``'s result used for model selection (higher is better)."""
    select_by_loss: bool = False
    """Select the best snapshot by lowest mean validation loss instead (pretraining)."""
    best_name: str | None = "BEST.pth"
    last_name: str | None = "LAST.pth"
    eval_batch_size: int = 512
    """Default evaluation batch (global) when the run does not set one."""

    def snapshot_name(self, epoch: int) -> str | None:
        """File name for the weights after 0-based ``epoch`` (None: no per-epoch snapshot)."""
        return None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialized model whose ``forward(**batch_inputs)`` gives the task output."""

    def initial_best(self) -> float:
        """The selection value a first epoch must beat to save the best snapshot (the original's 0 / 9595)."""
        return INITIAL_BEST_LOSS if self.select_by_loss else INITIAL_BEST_SCORE

    def oracle_score(self, dataset: Dataset) -> float | None:
        """Best reachable ``main_metric`` on ``dataset`` (the original's "Valid Oracle"), None if not defined."""
        return None

    def default_eval_batch(self, world_size: int) -> int:
        """Global evaluation batch when the run sets none: ``eval_batch_size`` per process."""
        return self.eval_batch_size * world_size

    def epoch_log_text(
        self, epoch: int, train: Mapping[str, float], valid: Mapping[str, float] | None, best: float | None
    ) -> str | None:
        """What the original appends to ``log.log`` after 0-based ``epoch`` (None: nothing).

        ``train`` holds ``loss``, ``loss/<part>`` and the training-prediction metrics, ``valid`` the
        validation metrics (None without validation), ``best`` the best selection value so far.
        """
        valid_score = valid.get(self.main_metric) if valid else None
        return finetune_epoch_text(epoch, train.get(self.main_metric), valid_score, best)

    @classmethod
    def folder(cls) -> str:
        """The task's folder under the data root."""
        return cls.data_folder or cls.name

    @classmethod
    def predict_splits(cls, name: str) -> list[PredictSplit]:
        """What ``--test name`` loads and writes, in order; raises ``SplitNameError`` on a name the task
        does not accept. By default the named split is predicted into ``<name>_predict``."""
        name = name.strip()
        return [PredictSplit(name, name)]

    @classmethod
    def check_split_names(cls, names: Sequence[str], flag: str = "") -> None:
        """Raise ``SplitNameError`` listing the accepted names when one of ``names`` is not one of them."""
        if cls.known_splits is None:
            return
        bad = [n for n in names if n not in cls.known_splits]
        if bad:
            where = f"{flag} " if flag else ""
            raise SplitNameError(
                f"{where}{','.join(bad)}: unknown {cls.name} split name(s); accepted: {', '.join(cls.known_splits)}"
            )

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        """The region-feature TSVs ``splits`` read (path -> leading lines to load, None: all)."""
        return {}

    @classmethod
    def missing_data_hints(cls, missing: Sequence[Path], root: Path) -> tuple[list[str], list[str]]:
        """For a run whose files ``missing`` are absent: download groups to add to the command the
        message gives, and lines saying how to build files no download provides as they are."""
        return [], []

    def test_splits(self, name: str) -> list[tuple[str, str]]:
        """``--test name`` -> ``[(split to load, prediction file stem), ...]``; raises on names the task refuses."""
        return [(s.load, s.output) for s in self.predict_splits(name)]

    def snapshot_facts(self, model: nn.Module) -> SnapshotFacts | None:
        """What a snapshot of ``model`` is (written beside its weights); None: nothing is written."""
        return None

    def load_pretrained(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Load initial weights (``--loadLXMERT``, ``--loadLXMERTQA``, BERT) before training."""

    @abstractmethod
    def dataset(self, splits: str, train: bool, full: bool = False) -> Dataset:
        """The examples of comma-separated ``splits``.

        ``train`` selects training behaviour (e.g. random masking); ``full`` ignores ``--tiny`` /
        ``--fast`` (test splits are always whole, as in the original).
        """

    @abstractmethod
    def collator(self, dataset: Dataset) -> Callable[[list[Any]], Batch]:
        """The function turning a list of ``dataset``'s examples into a ``Batch`` (tokenization and
        feature gathering happen here, in DataLoader workers when there are some)."""

    def forward(self, model: nn.Module, batch: Batch) -> Any:
        """Run the model on a batch (already on the device)."""
        return model(
            input_ids=batch.input_ids,
            feats=batch.feats,
            boxes=batch.boxes,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
            visual_mask=batch.visual_mask,
        )

    @abstractmethod
    def loss(self, output: Any, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        """Total loss to backpropagate and its named parts (detached) for logging."""

    @abstractmethod
    def predict(self, output: Any, batch: Batch) -> dict[Any, Any]:
        """Predictions of this batch, keyed by example id."""

    def prediction_codes(self, output: Any, batch: Batch) -> Tensor | None:
        """One row per example of ``batch`` (e.g. the argmax answer as an integer, or a float score, or
        a vector of them), left on the device so the loop can collect a whole epoch without waiting
        for it; the loop turns them into predictions once with ``decode_predictions`` (which gets
        each row as a Python number or list). None: the loop calls ``predict`` per batch."""
        return None

    def decode_predictions(self, codes: list[Any], ids: list[Any]) -> dict[Any, Any]:
        """Predictions keyed by example id from ``prediction_codes`` gathered over many batches."""
        raise NotImplementedError(f"{type(self).__name__} gives prediction codes but cannot decode them")

    @abstractmethod
    def score(self, predictions: Mapping[Any, Any], dataset: Dataset) -> dict[str, float]:
        """Metrics of ``predictions`` on ``dataset`` (empty when the split has no labels)."""

    @abstractmethod
    def write_predictions(
        self, predictions: Mapping[Any, Any], dataset: Dataset, output_dir: Path, split: str
    ) -> list[Path]:
        """Write the prediction/submission files of ``split`` into ``output_dir``."""
