"""Checkpoint I/O: the original ``.pth`` layouts, safetensors, atomic writes, clear load errors."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .fileio import atomic_write, describe_file, not_a
from .snapshot import FACTS_KEY, SnapshotFacts, read_facts

StateDict = dict[str, Tensor]

ENCODER_PREFIXES = ("lxrt_encoder.model.bert.", "bert.", "lxmert.")
"""Where the encoder sits in a fine-tuned snapshot, a pretraining snapshot and an HF checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class CheckpointShapeError(CheckpointError):
    """A parameter whose shape differs between the checkpoint and the model."""


def resolve_checkpoint(path: str | Path, suffixes: Sequence[str] = ("", ".pth", "_LXRT.pth")) -> Path:
    """Find the file the original command lines mean: ``snap/pretrained/model`` -> ``model_LXRT.pth``."""
    path = Path(path)
    tried = []
    for suffix in suffixes:
        candidate = path.with_name(path.name + suffix) if suffix else path
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"checkpoint not found: tried {', '.join(tried)}")


def strip_module(key: str) -> str:
    """Drop DataParallel/DDP ``module.`` components anywhere in a key."""
    return ".".join(part for part in key.split(".") if part != "module")


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from ``.pth``/``.bin`` (torch) or ``.safetensors``; ``module.`` removed.

    Full training checkpoints (a dict with a ``model`` entry) give their model state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        why = not_a(path, "a safetensors file")
        if why is not None:
            raise CheckpointError(why)
        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}; it looks like "
                                  f"{describe_file(path)})") from e
        state = _untie_safetensors(path, state)
    else:
        state = torch_load(path)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return {strip_module(k): v for k, v in state.items()}


def torch_load(path: str | Path, expected: str = "a PyTorch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for every file that is not one.

    Web pages, JSON, text, LFS pointers, empty and truncated files are named as such before torch
    sees them; a file holding Python objects other than tensors and plain data is refused (loading
    it could run code), naming the object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{expected[0].upper()}{expected[1:]} was expected at {path}: no such file")
    why = not_a(path, expected)
    if why is not None:
        raise CheckpointError(why)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain data{what}; refused, because loading "
            f"them could run code. Expected {expected} saved by this code or the original."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (it looks like {describe_file(path)}; "
            f"truncated or corrupt download?): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def _untie_safetensors(path: Path, state: StateDict) -> StateDict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    for pair in filter(None, meta.get("tied", "").split(",")):
        alias, target = pair.split("=")
        state[alias] = state[target]
    return state


def save_state_dict(state: Mapping[str, Tensor], path: str | Path, facts: SnapshotFacts | None = None) -> Path:
    """Write atomically: ``.safetensors`` by suffix, otherwise ``torch.save`` (the original format).

    Tensors that share storage (the tied LM decoder) are stored once in safetensors and restored
    on read. A safetensors file carries ``facts`` (what the snapshot is) in its metadata; a ``.pth``
    keeps the original layout, with the facts in a file beside it (``lxrt.snapshot.write_facts``).
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
        tied, unique = [], {}
        for k, v in state.items():
            ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            if ident in seen:
                tied.append(f"{k}={seen[ident]}")
            else:
                seen[ident] = k
                unique[k] = v.contiguous()
        metadata = {"tied": ",".join(tied)}
        if facts is not None:
            metadata[FACTS_KEY] = facts.to_json()
        size = tensor_bytes(unique)
        return atomic_write(path, lambda tmp: save_file(unique, str(tmp), metadata=metadata), size)
    return save_torch(state, path)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensor storages in ``obj`` (nested dicts, lists, tuples), each storage once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            storage = item.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, through a Python file so that a full disk keeps its
    errno (``DiskFullError`` naming the file, the space needed and free; the previous file intact)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write, size_hint=tensor_bytes(obj))


def export_safetensors(weights: str | Path, out: str | Path | None = None) -> Path:
    """A safetensors copy of ``weights`` (``X.pth`` -> ``X.safetensors``) carrying the facts of the
    snapshot (``lxrt.snapshot``) in its metadata, so the file says what it is on its own."""
    weights = Path(weights)
    out = Path(out) if out is not None else weights.with_suffix(".safetensors")
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the export is a .safetensors file")
    return save_state_dict(read_state_dict(weights), out, facts=read_facts(weights))


@dataclass
class LoadReport:
    """What a load did: keys of the model the file lacked and keys of the file the model lacks."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self, limit: int = 8) -> str:
        def show(keys: list[str]) -> str:
            more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        lines = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.missing:
            lines.append(f"  in model but not in file ({len(self.missing)}): {show(self.missing)}")
        if self.unexpected:
            lines.append(f"  in file but not in model ({len(self.unexpected)}): {show(self.unexpected)}")
        return "\n".join(lines)


def load_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    strict: bool = True,
    source: str = "<state dict>",
    ignore_missing: Iterable[str] = (),
) -> LoadReport:
    """Copy ``state`` into ``model`` after checking every shape.

    A shape mismatch always raises ``CheckpointShapeError`` naming the key, the file and both
    shapes. ``strict`` also raises on missing or unexpected keys; otherwise they are reported.
    Keys starting with a prefix in ``ignore_missing`` may be missing even when strict.
    """
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointShapeError(
                f"{source}: parameter {k!r} has shape {tuple(v.shape)} in the file but "
                f"{tuple(own[k].shape)} in the model (a checkpoint of another task or size?)"
            )
    ignore = tuple(ignore_missing)
    missing = sorted(k for k in own if k not in state and not (ignore and k.startswith(ignore)))
    unexpected = sorted(k for k in state if k not in own)
    report = LoadReport(source=source, loaded=sum(k in own for k in state), missing=missing, unexpected=unexpected)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source} does not match the model (strict load):\n{report.summary()}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return report


def encoder_state(state: Mapping[str, Tensor], source: str = "<state dict>") -> StateDict:
    """The encoder's tensors (keys relative to ``LXRTModel``) from any known layout."""
    for prefix in ENCODER_PREFIXES:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    raise CheckpointError(
        f"{source}: no encoder weights found (expected keys starting with one of {ENCODER_PREFIXES})"
    )


def load_encoder(encoder: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """``--loadLXMERT``: the encoder from a pretraining, fine-tuned or HF checkpoint; heads dropped.

    ``encoder`` is an ``LXRTModel``. Strict by default: every encoder weight must be in the file,
    which catches the silent no-load behind "NLVR2 stuck at 50%".
    """
    file = resolve_checkpoint(path)
    state = read_state_dict(file)
    return load_state(encoder, encoder_state(state, str(file)), strict=strict, source=str(file))


def remap_answer_head(
    weight: Tensor,
    bias: Tensor,
    src_answers: Sequence[str],
    dst_answers: Sequence[str],
    normalize: Callable[[str], str],
) -> tuple[Tensor, Tensor, int]:
    """Rows of a pretrained answer classifier reordered onto another answer table.

    Destination answer ``a`` takes the source row of ``normalize(a)``; answers absent from the
    source get zero weight and bias (as the original ``load_lxmert_qa``). Returns the new weight,
    bias and how many answers were found.
    """
    if weight.shape[0] != len(src_answers):
        raise CheckpointShapeError(
            f"pretrained answer head has {weight.shape[0]} rows but the answer table has {len(src_answers)}"
        )
    index = {a: i for i, a in enumerate(src_answers)}
    new_w = weight.new_zeros((len(dst_answers), weight.shape[1]))
    new_b = bias.new_zeros(len(dst_answers))
    found = 0
    for j, ans in enumerate(dst_answers):
        i = index.get(normalize(ans))
        if i is not None:
            new_w[j] = weight[i]
            new_b[j] = bias[i]
            found += 1
    return new_w, new_b, found
