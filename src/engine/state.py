"""Resumable training state: weights, optimizer, scheduler, scaler, position in the data, RNGs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lxrt.checkpoint import CheckpointError, atomic_write

RESUME_FILE = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """The original seeds torch, random and numpy with ``--seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the resume file atomically (a crash keeps the previous one)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resumable checkpoint at {path} (nothing to --resume)")
    try:
        # Optimizer and RNG states hold numpy/python objects: this file is our own.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable resume checkpoint ({e})") from e
