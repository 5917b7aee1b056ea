"""BertAdam, the optimizer LXMERT was trained with, under the original's name and arguments.

Adam without bias correction and with decoupled weight decay on every parameter; the learning rate
is scheduled inside the optimizer over ``t_total`` steps (``-1``: constant) with ``warmup`` as a
fraction of them, step counted from 0 (so the first update uses ``lr * schedule(0) = 0``).
``max_grad_norm`` is accepted and ignored, as in the original: gradients are clipped outside.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


def warmup_linear(x: float, warmup: float = 0.002) -> float:
    """Linear warm-up to 1 over the first ``warmup`` of training, then linear decay to 0."""
    if x < warmup:
        return x / warmup
    return max((x - 1.0) / (warmup - 1.0), 0.0)


def warmup_cosine(x: float, warmup: float = 0.002) -> float:
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


def warmup_constant(x: float, warmup: float = 0.002) -> float:
    if x < warmup:
        return x / warmup
    return 1.0


SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
}


class BertAdam(Optimizer):
    """``BertAdam(params, lr, warmup=-1, t_total=-1, schedule='warmup_linear', b1=0.9, b2=0.999,
    e=1e-6, weight_decay=0.01, max_grad_norm=1.0)``.

    Per step: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr_t (m / (sqrt(v) + e) + wd p),
    with lr_t = lr * schedule(step / t_total, warmup). ``t_total=0`` is accepted (an evaluation-only
    run builds the optimizer without training steps) but cannot step.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        warmup: float = -1,
        t_total: int = -1,
        schedule: str = "warmup_linear",
        b1: float = 0.9,
        b2: float = 0.999,
        e: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float = 1.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule parameter: {schedule!r}; choose from {', '.join(SCHEDULES)}")
        if not 0.0 <= warmup < 1.0 and warmup != -1:
            raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid b1 parameter: {b1} - should be in [0.0, 1.0[")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid b2 parameter: {b2} - should be in [0.0, 1.0[")
        if not e >= 0.0:
            raise ValueError(f"Invalid epsilon value: {e} - should be >= 0.0")
        defaults = dict(
            lr=lr, warmup=warmup, t_total=t_total, schedule=schedule, b1=b1, b2=b2, eps=e,
            weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        )  # fmt: skip
        super().__init__(params, defaults)

    def current_lr(self, group: dict, step: int) -> float:
        """The learning rate of ``group``'s update number ``step`` (0-based)."""
        if group["t_total"] < 0:
            return group["lr"]
        if group["t_total"] == 0:
            raise ValueError("BertAdam with t_total=0 cannot step: give the number of steps, or -1")
        schedule = SCHEDULES[group.get("schedule", "warmup_linear")]
        return group["lr"] * schedule(step / group["t_total"], group["warmup"])

    def get_lr(self) -> list[float]:
        """The scheduled learning rate of each parameter for its next step ([0] before the first)."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    return [0]
                out.append(self.current_lr(group, state["step"]))
        return out

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
            # One fused pass over all tensors of the group (torch's foreach kernels).
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
