"""The original code's ``lxrt.optimization.BertAdam``: the engine's BertAdam with the original arguments.

Adam without bias correction, weight decay on every parameter, the learning rate scheduled inside
the optimizer over ``t_total`` steps (``-1``: constant) with ``warmup`` as a fraction of them, and
no gradient clipping (``max_grad_norm`` is accepted and ignored, as in the original: clip outside).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import Tensor

from engine.optim import BertAdam as _EngineBertAdam
from engine.optim import warmup_linear


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


class BertAdam(_EngineBertAdam):
    """``BertAdam(params, lr, warmup=-1, t_total=-1, schedule='warmup_linear', b1=0.9, b2=0.999,
    e=1e-6, weight_decay=0.01, max_grad_norm=1.0)``, the original's signature and schedules."""

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
        params = list(params)
        given = params if params and isinstance(params[0], dict) else [{}]
        # The engine accepts warmup in [0, 1) only; the original also takes -1 with a schedule.
        super().__init__(params, lr=lr, warmup=0.0, t_total=t_total, b1=b1, b2=b2, eps=e, weight_decay=weight_decay)
        self.defaults.update(warmup=warmup, schedule=schedule, max_grad_norm=max_grad_norm)
        for group, spec in zip(self.param_groups, given):
            group["warmup"] = spec.get("warmup", warmup)
            group.setdefault("schedule", schedule)
            group.setdefault("max_grad_norm", max_grad_norm)

    def current_lr(self, group: dict, step: int) -> float:
        if group["t_total"] == -1:
            return group["lr"]
        if group["t_total"] == 0:  # accepted at construction (evaluation-only runs), as the original
            raise ValueError("BertAdam with t_total=0 cannot step: give the number of steps, or -1")
        return group["lr"] * SCHEDULES[group.get("schedule", "warmup_linear")](step / group["t_total"], group["warmup"])

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
