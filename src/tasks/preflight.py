"""What every entry point checks before it loads a model or trains: split names, the data files,
``--multiGPU`` without GPUs (so that a run never trains for
hours and then fails on a missing file)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.config import TrainConfig
from engine.report import note_in_run_log
from engine.task import Task
from engine.validate import ResumeMismatchError, multi_gpu_note
from features.store import StoreError
from features.tsv import TSVFormatError
from lxrt.checkpoint import CheckpointError
from lxrt.fileio import DiskFullError, disk_full_error, is_disk_full
from tasks.answers import DataFormatError
from tasks.completeness import IncompleteSubmissionError
from tasks.data_common import MissingFeaturesError
from tasks.datacheck import MissingDataError, require_data
from tasks.splits import SplitNameError

USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError, DataFormatError, DiskFullError, IncompleteSubmissionError, MissingDataError,
    MissingFeaturesError, ResumeMismatchError, SplitNameError, StoreError, TSVFormatError,
)
"""Errors about the user's files and settings: their message says it all, without a traceback."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn ``USER_ERRORS`` (and any full disk) into ``SystemExit("error: <message>")`` (exit status
    1); the line goes to the run's ``run.log`` too when there is room."""
    try:
        yield
    except USER_ERRORS as e:
        note_in_run_log(f"error: {e}")
        raise SystemExit(f"error: {e}") from None
    except OSError as e:
        if not is_disk_full(e, None):
            raise
        full = disk_full_error(e.filename) if e.filename else e
        raise SystemExit(f"error: {full}") from None


def preflight(task: type[Task] | str, cfg: TrainConfig, multi_gpu: bool = False) -> None:
    """Exit with one clear message when the run cannot start (split names, the data files and feature
    TSVs of ``task``'s splits, pretrained weights); warn about ``--multiGPU`` on a CPU."""
    note = multi_gpu_note(multi_gpu, torch.cuda.is_available())
    if note:
        print(f"warning: {note}", file=sys.stderr)
    try:
        pretrained = [p for p in (cfg.load_lxmert, cfg.load_lxmert_qa) if p]
        require_data(task, cfg.train, cfg.valid, cfg.test, cfg.data_root, pretrained)
    except (SplitNameError, MissingDataError) as e:
        raise SystemExit(f"error: {e}") from None
