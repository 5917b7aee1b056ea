"""BertAdam against a plain re-statement of the original update rule, and the schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.optim import BertAdam, build_optimizer, clip_grad_norm, current_lr, warmup_linear


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


def test_bert_adam_checks_its_settings_and_gradients():
    """The original's checks and messages (``lxrt.optimization`` is the original's API)."""
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -0.1 - should be >= 0.0$"):
        BertAdam(layer.parameters(), lr=-0.1)
    with pytest.raises(ValueError, match=r"^Invalid warmup: 1.0 - should be in \[0.0, 1.0\[ or -1$"):
        BertAdam(layer.parameters(), lr=0.1, warmup=1.0, t_total=10)
    with pytest.raises(ValueError, match="Invalid warmup"):
        BertAdam(layer.parameters(), lr=0.1, warmup=-0.1, t_total=10)
    with pytest.raises(ValueError, match="Invalid warmup"):  # refused as in the original, schedule or not
        BertAdam(layer.parameters(), lr=0.0, warmup=1.0, t_total=-1)
    with pytest.raises(ValueError, match=r"^Invalid b1 parameter: 1.0 - should be in \[0.0, 1.0\[$"):
        BertAdam(layer.parameters(), lr=0.1, b1=1.0)
    with pytest.raises(ValueError, match=r"^Invalid schedule parameter: 'step'; choose from "):
        BertAdam(layer.parameters(), lr=0.1, schedule="step")
    BertAdam(layer.parameters(), lr=0.0, warmup=-1, t_total=-1)  # no warm-up, no schedule: the defaults
    BertAdam(layer.parameters(), lr=0.1, warmup=0.0, t_total=10)
    emb = nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="BertAdam does not support sparse gradients"):
        BertAdam(emb.parameters(), lr=0.1).step()


def test_bert_adam_without_schedule_keeps_the_lr_and_returns_the_closures_loss():
    layer = nn.Linear(1, 1, bias=False)
    layer.weight.data.fill_(1.0)
    frozen = nn.Parameter(torch.ones(1))  # no gradient: left alone, no state
    opt = BertAdam([layer.weight, frozen], lr=0.1, t_total=-1, weight_decay=0.0)
    assert current_lr(opt) == 0.1  # before any step
    layer.weight.grad = torch.full_like(layer.weight, 2.0)
    assert opt.step(lambda: 3.5) == 3.5
    # m = 0.2, v = 0.004: the update is lr * m / (sqrt(v) + eps) = 0.1 * 0.2 / (0.0632456 + 1e-6)
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[1.0 - 0.1 * 0.2 / (0.004**0.5 + 1e-6)]]))
    assert torch.equal(frozen.detach(), torch.ones(1)) and frozen not in opt.state
    assert current_lr(opt) == 0.1 and opt.step() is None
    scheduled = BertAdam([nn.Parameter(torch.ones(1))], lr=0.1, warmup=0.5, t_total=4)
    assert current_lr(scheduled) == 0.0  # the first update's lr
    for expected in (0.0, 0.05, 0.1, 0.05):
        scheduled.param_groups[0]["params"][0].grad = torch.ones(1)
        scheduled.step()
        assert current_lr(scheduled) == pytest.approx(expected)


def test_each_optim_name_and_its_schedule():
    model = nn.Linear(2, 2)
    for name, cls in (("adam", torch.optim.Adam), ("adamax", torch.optim.Adamax), ("rms", torch.optim.RMSprop),
                      ("sgd", torch.optim.SGD)):  # fmt: skip
        opt, sched = build_optimizer(model, name, lr=0.3, t_total=10, warmup=0.1)
        assert type(opt) is cls and sched is None and opt.param_groups[0]["lr"] == 0.3 and current_lr(opt) == 0.3
        assert len(opt.param_groups[0]["params"]) == 2
    opt, sched = build_optimizer(model, "bert", lr=0.3, t_total=10, warmup=0.2, weight_decay=0.05)
    assert type(opt) is BertAdam and sched is None
    assert {k: opt.param_groups[0][k] for k in ("lr", "warmup", "t_total", "weight_decay")} == dict(
        lr=0.3, warmup=0.2, t_total=10, weight_decay=0.05)  # fmt: skip
    choices = "bert, adamw, adam, adamax, rms, sgd"
    with pytest.raises(ValueError, match=rf"^unknown optimizer 'lion'; choose from {choices}$"):
        build_optimizer(model, "lion", lr=1e-3, t_total=10, warmup=0.1)
    model.bias.requires_grad_(False)
    opt, _ = build_optimizer(model, "sgd", lr=0.3, t_total=10, warmup=0.1)
    assert len(opt.param_groups[0]["params"]) == 1  # frozen parameters are not optimized

    def lrs(warmup: float, t_total: int) -> list[float]:
        opt, sched = build_optimizer(nn.Linear(2, 2), "adamw", lr=1.0, t_total=t_total, warmup=warmup)
        assert opt.defaults["fused"] is True
        out = []
        for _ in range(5):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs(0.5, 4) == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])  # warm-up then linear decay
    assert lrs(0.0, 4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])  # no warm-up: decay from the start
    assert lrs(0.0, 0) == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0])  # t_total 0 counts as 1


def test_clip_grad_norm_off_and_on():
    model = nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert clip_grad_norm(model, 0) is None and clip_grad_norm(model, -1.0) is None
    assert torch.equal(model.weight.grad, torch.tensor([[3.0, 4.0]]))
    norm = clip_grad_norm(model, 1.0)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.8]]), atol=1e-6, rtol=1e-5)


def test_defaults_and_the_edges_of_the_schedule_settings():
    p = nn.Parameter(torch.ones(2))
    group = BertAdam([p], lr=0.1, t_total=10).param_groups[0]
    settings = (group["warmup"], group["weight_decay"], group["b1"], group["b2"], group["eps"])
    assert settings == (-1, 0.01, 0.9, 0.999, 1e-6)  # the original's signature: warmup=-1, e=1e-6
    assert build_optimizer(nn.Linear(2, 2), "bert", lr=0.1, t_total=10, warmup=0.1)[0].defaults["weight_decay"] == 0.01
    opt, _ = build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, t_total=10, warmup=0.1, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    with pytest.raises(ValueError, match="Invalid warmup"):
        BertAdam([p], lr=0.1, warmup=1.0, t_total=1)
    for t_total, expected in ((-1, 0.1), (-5, 0.1), (1, 0.0)):  # t_total < 0: constant; 1: scheduled (0 at step 0)
        opt = BertAdam([nn.Parameter(torch.ones(1))], lr=0.1, warmup=0.5, t_total=t_total)
        assert current_lr(opt) == expected, t_total
    opt = BertAdam([nn.Parameter(torch.ones(1))], lr=0.1, warmup=0.5, t_total=0)  # built: an evaluation-only run
    with pytest.raises(ValueError, match=r"^BertAdam with t_total=0 cannot step"):
        current_lr(opt)


def test_no_decay_on_any_bias_or_layernorm_parameter_whatever_its_shape():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(2, 2, bias=False)  # decayed
            self.LayerNorm = nn.Linear(2, 2, bias=False)  # a 2-D weight under a LayerNorm name: not decayed
            self.bias = nn.Parameter(torch.ones(2, 2))  # a 2-D bias: not decayed
            self.scale = nn.Parameter(torch.ones(2))  # 1-D: not decayed

    block = Block()
    opt, _ = build_optimizer(nn.Sequential(block), "adamw", lr=0.1, t_total=10, warmup=0.1)
    decay, no_decay = opt.param_groups
    assert [id(p) for p in decay["params"]] == [id(block.dense.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(block.LayerNorm.weight), id(block.bias), id(block.scale)}
