"""BertAdam against a plain re-statement of the original update rule, and the schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.optim import BertAdam, build_optimizer, warmup_linear


def reference_bert_adam(params, grads_per_step, lr, warmup, t_total, b1=0.9, b2=0.999, eps=1e-6, wd=0.01):
    """Scalar-by-scalar loop of the original rule (no bias correction, decay on all params)."""
    params = [p.clone().double() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step):
        x = step / t_total
        factor = x / warmup if x < warmup else max((x - 1.0) / (warmup - 1.0), 0.0)
        lr_t = lr * factor
        for p, g, mi, vi in zip(params, grads, m, v):
            g = g.double()
            mi.mul_(b1).add_((1 - b1) * g)
            vi.mul_(b2).add_((1 - b2) * g * g)
            p.sub_(lr_t * (mi / (vi.sqrt() + eps) + wd * p))
    return params


def test_bert_adam_matches_reference_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    start = [p.detach().clone() for p in model.parameters()]
    opt = BertAdam(model.parameters(), lr=1e-2, warmup=0.2, t_total=10)
    all_grads = []
    for _ in range(10):
        grads = [torch.randn_like(p) for p in model.parameters()]
        all_grads.append(grads)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt.step()
    expected = reference_bert_adam(start, all_grads, lr=1e-2, warmup=0.2, t_total=10)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach().double(), e, atol=1e-6, rtol=1e-6)


def test_first_update_uses_zero_lr_and_decay_hits_every_parameter():
    layer = nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    opt = BertAdam(layer.parameters(), lr=0.1, warmup=0.1, t_total=100, weight_decay=0.01)
    for p in layer.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for p, b in zip(layer.parameters(), before):
        assert torch.equal(p.detach(), b)
    # Zero gradients from the start keep the Adam moments at 0, so the only change is the decay,
    # on the bias as on the weight: p <- p - lr_t * wd * p with lr_t = 0.1 * (0.01 / 0.1) at step 1.
    opt = BertAdam(layer.parameters(), lr=0.1, warmup=0.1, t_total=100, weight_decay=0.01)
    for _ in range(2):
        for p in layer.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for p, b in zip(layer.parameters(), before):
        torch.testing.assert_close(p.detach(), b * (1 - 0.01 * 0.01), atol=0, rtol=1e-6)
        assert not torch.equal(p.detach(), b)


@pytest.mark.parametrize("x,w,expected", [(0.0, 0.1, 0.0), (0.05, 0.1, 0.5), (0.1, 0.1, 1.0), (0.55, 0.1, 0.5),
                                          (1.0, 0.1, 0.0), (1.2, 0.1, 0.0)])
def test_warmup_linear(x, w, expected):
    assert math.isclose(warmup_linear(x, w), expected, abs_tol=1e-12)


def test_adamw_groups_skip_decay_on_bias_and_layernorm():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt, sched = build_optimizer(model, "adamw", lr=1e-3, t_total=10, warmup=0.1, weight_decay=0.01)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    assert sched is not None
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "lion", lr=1e-3, t_total=10, warmup=0.1)
