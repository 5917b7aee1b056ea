"""Checks that run before any work: numeric flags at parse time, the config as a whole, a resumed
run's settings against its checkpoint, and ``--multiGPU`` on a machine without GPUs."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from .config import TrainConfig

SEED_MAX = 2**32 - 1  # numpy's seed range


def _number(kind: type, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False,
            what: str = "") -> Callable[[str], Any]:
    """An argparse ``type`` parsing ``kind`` within [lo, hi] (open ends where asked)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{text}: expected {what}")
        return value

    parse.__name__ = what or kind.__name__  # argparse shows it in "invalid <name> value"
    return parse


positive_int = _number(int, 1, None, what="an integer >= 1")
non_negative_int = _number(int, 0, None, what="an integer >= 0")
non_negative_float = _number(float, 0, None, what="a number >= 0")
fraction = _number(float, 0, 1, what="a number between 0 and 1")
warmup_fraction = _number(float, 0, 1, hi_open=True, what="a fraction in [0, 1)")
seed_int = _number(int, 0, SEED_MAX, what=f"an integer between 0 and {SEED_MAX}")
seq_length = _number(int, 3, 512, what="an integer between 3 and 512 ([CLS], a word piece, [SEP])")

FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "--batchSize": positive_int,
    "--lr": non_negative_float,  # 0 keeps the loaded weights (a pipeline check)
    "--epochs": positive_int,
    "--dropout": fraction,
    "--seed": seed_int,
    "--llayers": positive_int,
    "--xlayers": positive_int,
    "--rlayers": positive_int,
    "--numWorkers": non_negative_int,
    "--eval-batch-size": non_negative_int,
    "--save-every": non_negative_int,
    "--max-steps": non_negative_int,
    "--warmup": warmup_fraction,
    "--weight-decay": non_negative_float,
    "--clip-norm": non_negative_float,
    "--log-every": positive_int,
    "--max-seq-length": seq_length,
    "--wordMaskRate": fraction,
    "--objMaskRate": fraction,
    "--qaStartEpoch": non_negative_int,
}
"""The argparse ``type`` of every numeric flag of the training entry points."""


def check_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` for settings no run can use (recipes and ``--model-config`` files included)."""
    rules: list[tuple[bool, str]] = [
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.epochs >= 1, f"epochs must be >= 1 (0 would write an untrained model), got {cfg.epochs}"),
        (cfg.lr >= 0 and math.isfinite(cfg.lr), f"lr must be a finite number >= 0, got {cfg.lr}"),
        (0 <= cfg.warmup < 1, f"warmup must be a fraction in [0, 1), got {cfg.warmup}"),
        (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.clip_norm >= 0, f"clip_norm must be >= 0, got {cfg.clip_norm}"),
        (cfg.eval_batch_size >= 0, f"eval_batch_size must be >= 0, got {cfg.eval_batch_size}"),
        (cfg.save_every >= 0, f"save_every must be >= 0, got {cfg.save_every}"),
        (cfg.max_steps >= 0, f"max_steps must be >= 0, got {cfg.max_steps}"),
        (cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}"),
        (cfg.num_workers >= 0, f"num_workers must be >= 0, got {cfg.num_workers}"),
        (0 <= cfg.seed <= SEED_MAX, f"seed must be between 0 and {SEED_MAX}, got {cfg.seed}"),
        (
            3 <= cfg.max_seq_length <= cfg.model.max_position_embeddings,
            f"max_seq_length must be between 3 and the model's {cfg.model.max_position_embeddings} positions, "
            f"got {cfg.max_seq_length}",
        ),
    ]
    problems = [msg for ok, msg in rules if not ok]
    if problems:
        raise ValueError("; ".join(problems))


# Settings a resumed run must share with its checkpoint: they fix the parameter shapes, the optimizer
# state, the learning-rate schedule, the data order and the position inside the epoch.
RESUME_FIXED: dict[str, str] = {
    "batch_size": "--batchSize",
    "epochs": "--epochs",
    "lr": "--lr",
    "optim": "--optim",
    "warmup": "--warmup",
    "weight_decay": "--weight-decay",
    "seed": "--seed",
    "train": "--train",
    "tiny": "--tiny",
    "fast": "--fast",
    "max_seq_length": "--max-seq-length",
    "amp": "--amp",  # the fp16 grad scaler's state exists only with fp16
    "model": "--model-config / --llayers / --xlayers / --rlayers",
    "task": "the task",
}


class ResumeMismatchError(ValueError):
    """A resumed run whose settings differ from those its checkpoint was written with."""


def check_resume_config(saved: Mapping[str, Any] | None, cfg: TrainConfig, path: Any,
                        saved_steps: int | None = None, steps: int | None = None) -> None:
    """Refuse to resume ``path`` with settings that change shapes, optimizer, schedule or data position."""
    if not saved:
        return
    now = cfg.to_dict()
    diffs = []
    for name, flag in RESUME_FIXED.items():
        if name in saved and saved[name] != now[name]:
            if name == "model":
                changed = sorted(k for k in set(saved[name]) | set(now[name])
                                 if saved[name].get(k) != now[name].get(k))
                diffs.append(f"{flag}: model fields {', '.join(changed)} differ")
            else:
                diffs.append(f"{flag}: {saved[name]!r} in the checkpoint, {now[name]!r} now")
    if saved_steps is not None and steps is not None and saved_steps != steps:
        diffs.append(f"steps per epoch: {saved_steps} in the checkpoint, {steps} now (the training data changed?)")
    if diffs:
        raise ResumeMismatchError(
            f"cannot --resume {path}: this run's settings differ from the checkpoint's:\n  " + "\n  ".join(diffs)
            + "\nThey fix the parameter shapes, the optimizer state, the schedule and the position in the epoch. "
            "Rerun with the checkpoint's settings (its config is in the checkpoint and in config.json), or "
            "start a new run in another --output."
        )


def multi_gpu_note(asked: bool, cuda_available: bool, world_size: int | None = None) -> str | None:
    """What to say when ``--multiGPU`` is given on a machine without GPUs (None: nothing to say)."""
    if not asked or cuda_available:
        return None
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return f"--multiGPU: no GPU is visible; running {world} CPU processes (gloo) as NPROC_PER_NODE asked"
    return ("--multiGPU: no GPU is visible (CUDA is not available), so this runs ONE process on the CPU; "
            "NPROC_PER_NODE=N runs N CPU processes instead")
