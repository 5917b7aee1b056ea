"""Optimizers: the original BertAdam exactly, and AdamW as the modern alternative."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def warmup_linear(progress: float, warmup: float) -> float:
    """The original schedule factor: linear warm-up to 1 over ``warmup``, then linear decay to 0."""
    if progress < warmup:
        return progress / warmup
    return max((progress - 1.0) / (warmup - 1.0), 0.0)


class BertAdam(Optimizer):
    """Adam without bias correction, decoupled weight decay on every parameter, built-in schedule.

    Per step: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr_t (m / (sqrt(v) + eps) + wd p)
    with lr_t = lr * warmup_linear(step / t_total, warmup) and step counted from 0, so the first
    update uses lr_t = 0. ``t_total <= 0`` gives a constant lr. This is the original's optimizer
    (``--optim bert``) with its defaults.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        warmup: float = 0.1,
        t_total: int = -1,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not 0.0 <= warmup < 1.0 and t_total > 0:
            raise ValueError(f"warmup must be in [0, 1), got {warmup}")
        defaults = dict(lr=lr, warmup=warmup, t_total=t_total, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def current_lr(self, group: dict, step: int) -> float:
        if group["t_total"] <= 0:
            return group["lr"]
        return group["lr"] * warmup_linear(step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params, grads, ms, vs = [], [], [], []
            step = None
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step = state["step"] if step is None else step
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            if not params:
                continue
            lr_t = self.current_lr(group, step)
            group["last_lr"] = lr_t
            torch._foreach_mul_(ms, group["b1"])
            torch._foreach_add_(ms, grads, alpha=1 - group["b1"])
            torch._foreach_mul_(vs, group["b2"])
            torch._foreach_addcmul_(vs, grads, grads, value=1 - group["b2"])
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_div(ms, denom)
            if group["weight_decay"]:
                torch._foreach_add_(update, params, alpha=group["weight_decay"])
            torch._foreach_add_(params, update, alpha=-lr_t)
            for p in params:
                self.state[p]["step"] += 1
        return loss


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
