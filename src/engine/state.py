"""Resumable training state: weights, optimizer, scheduler, scaler, position in the data, RNGs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lxrt.checkpoint import CheckpointError, save_torch, torch_load

RESUME_FILE = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain Python values (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """The original seeds torch, random and numpy with ``--seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the resume file atomically (a crash keeps the previous one; a full disk is a
    ``DiskFullError`` naming the file, the space needed and free)."""
    return save_torch(state, path)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The resume file, loaded with ``weights_only=True``: tensors and plain data only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resumable checkpoint at {path} (nothing to --resume)")
    state = torch_load(path, expected="a resumable checkpoint (checkpoint.pt written by --save-every/epoch ends)")
    needed = ("model", "optimizer", "rng", "epoch", "step")
    missing = [k for k in needed if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a resumable checkpoint of this code (missing {', '.join(missing)}); "
            "--resume continues a run of this code from <output>/checkpoint.pt"
        )
    return state
