"""Processes, devices, wrapping (DDP / FSDP2) and data sharding for the training loop.

One process per GPU (or one CPU process, or several gloo CPU processes), started by ``torchrun``
which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT for one or many machines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Read the torchrun environment, pick the device and join the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap_model(model: nn.Module, env: DistEnv, fsdp: bool = False) -> nn.Module:
    """DDP (default) or FSDP2 ``fully_shard`` on each transformer layer, when more than one process."""
    if not env.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if type(module).__name__ in ("BertLayer", "LXRTXLayer"):
                fully_shard(module)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    # The pooled-only path leaves the last cross layer's vision branch unused.
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, on every rank (gathers FSDP shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = unwrap(model)
    if dist.is_initialized():
        return get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return {k: float(v) / env.world_size for k, v in zip(keys, t.tolist())}


def gather_dicts(local: dict[Any, Any], env: DistEnv) -> dict[Any, Any]:
    """Merge per-rank dicts on every rank (duplicate keys from padded shards collapse)."""
    if not env.distributed:
        return local
    parts: list[dict[Any, Any] | None] = [None] * env.world_size
    dist.all_gather_object(parts, local)
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part or {})
    return merged


class ShardSampler(Sampler[int]):
    """Deterministic per-epoch order, sharded across processes, resumable mid-epoch.

    Training (``drop_last``): the permutation is cut to a multiple of ``world * per_rank_batch``
    and rank r takes positions r, r + world, ...; with equal per-rank batches the union of the
    ranks' step-t batches is the single-process step-t batch of the same global size.
    Evaluation: every rank gets ceil(n / world) indices, the last ranks padded with repeats
    (predictions are keyed by example id, so repeats collapse and every example counts once).
    ``start`` skips that many of this rank's indices (resume).
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int,
        env: DistEnv,
        per_rank_batch: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.n, self.shuffle, self.seed, self.env = n, shuffle, seed, env
        self.per_rank_batch, self.drop_last = per_rank_batch, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        w = self.env.world_size
        if self.drop_last:
            step = w * self.per_rank_batch
            order = order[: (len(order) // step) * step]
        else:
            per_rank = -(-len(order) // w) if order else 0
            order = order + order[: per_rank * w - len(order)]
        return order[self.env.rank :: w]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(len(self._indices()) - self.start, 0)
