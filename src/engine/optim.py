"""Optimizers by the original ``--optim`` names: BertAdam (``lxrt.optimization``) exactly, AdamW as the
modern alternative."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from lxrt.optimization import BertAdam, warmup_linear

__all__ = ["BertAdam", "build_optimizer", "clip_grad_norm", "current_lr", "warmup_linear"]


def _no_decay(name: str, param: Tensor) -> bool:
    return param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias")


def build_optimizer(
    model: nn.Module, name: str, lr: float, t_total: int, warmup: float, weight_decay: float = 0.01
) -> tuple[Optimizer, LRScheduler | None]:
    """The optimizer and (for non-BertAdam) its scheduler, by the original ``--optim`` names.

    ``bert``: BertAdam as the original (decay on every parameter, internal schedule).
    ``adamw``: torch AdamW (fused where supported), no decay on biases/LayerNorm, same warm-up
    linear schedule. ``adam``, ``adamax``, ``rms``, ``sgd``: constant lr, as the original.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "bert":
        return BertAdam(params, lr=lr, warmup=warmup, t_total=t_total, weight_decay=weight_decay), None
    if name == "adamw":
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(n, p) else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = all(p.device.type in ("cuda", "cpu") for p in params)
        opt = torch.optim.AdamW(groups, lr=lr, fused=fused)
        total = max(t_total, 1)
        sched = LambdaLR(opt, lambda s: warmup_linear(s / total, warmup) if warmup > 0 else max(1 - s / total, 0))
        return opt, sched
    simple = {
        "adam": torch.optim.Adam,
        "adamax": torch.optim.Adamax,
        "rms": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
    }
    if name not in simple:
        raise ValueError(f"unknown optimizer {name!r}; choose from bert, adamw, {', '.join(simple)}")
    return simple[name](params, lr=lr), None


def current_lr(optimizer: Optimizer) -> float:
    """The learning rate the last (or, before any step, the next) update used."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, BertAdam):
        if "last_lr" in group:
            return group["last_lr"]
        return optimizer.current_lr(group, 0)
    return float(group["lr"])


def clip_grad_norm(model: nn.Module, max_norm: float) -> Tensor | None:
    """Clip all gradients to ``max_norm`` (the original: 5.0 fine-tuning, 1.0 pretraining).

    Returns the total norm as a tensor (no host sync), or None when clipping is off.
    """
    if max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
