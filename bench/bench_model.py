"""Training-step speed of this LXMERT against HF ``transformers`` ``LxmertModel``, same run, same CPU.

Each step: forward on (B, 20) tokens and (B, 36, 2048) features, the VQA head (768 -> 1536 ->
3129), BCE x 3129 loss, backward, optimizer step; fp32. Steps of the two models are interleaved
so clock drift hits both alike; the medians are compared. Beside them: the same run's fp32
matrix-multiply rate, and the FLOP/s each model reaches (analytic 31.76 GFLOP per example for
the full computation; this model skips the work no answer head reads, so its "work done" is less).
Peak memory of each model's training step is measured in a subprocess of its own.

    PYTHONPATH=src python bench/bench_model.py --iters 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from engine.flops import forward_flops  # noqa: E402
from lxrt import LXRTConfig, answer_mlp, hf_config  # noqa: E402
from tasks.models import Classifier  # noqa: E402

NUM_ANSWERS = 3129


class HFQAModel(nn.Module):
    """HF ``LxmertModel`` with the same answer MLP on its pooled output."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        from transformers import LxmertModel

        self.lxmert = LxmertModel(hf_config(config))
        self.logit_fc = answer_mlp(config.hidden_size, 2 * config.hidden_size, NUM_ANSWERS)

    def forward(self, input_ids, feats, boxes, attention_mask):
        out = self.lxmert(input_ids=input_ids, visual_feats=feats, visual_pos=boxes, attention_mask=attention_mask)
        return self.logit_fc(out.pooled_output)


def make_inputs(batch: int, seq: int = 20, boxes: int = 36, feat: int = 2048):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:, 14:] = 0
    f = torch.randn(batch, boxes, feat, generator=g).relu()
    xy = torch.rand(batch, boxes, 2, generator=g) * 0.5
    pos = torch.cat([xy, xy + 0.4], -1)
    target = (torch.rand(batch, NUM_ANSWERS, generator=g) > 0.999).float()
    return ids, mask, f, pos, target


def build(kind: str, config: LXRTConfig) -> nn.Module:
    torch.manual_seed(0)
    return HFQAModel(config) if kind == "hf" else Classifier(config, NUM_ANSWERS, pooled_only=True)


def make_step(model: nn.Module, optimizer: str, inputs):
    ids, mask, f, pos, target = inputs
    if optimizer == "adamw-fused":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()

    def step() -> float:
        t = time.perf_counter()
        logits = model(input_ids=ids, feats=f, boxes=pos, attention_mask=mask)
        loss = loss_fn(logits, target) * NUM_ANSWERS
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    return step


def executed_gflops(model: nn.Module, inputs) -> float:
    """FLOPs one forward + backward really executes (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    ids, mask, f, pos, target = inputs
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, feats=f, boxes=pos, attention_mask=mask)
        (nn.functional.binary_cross_entropy_with_logits(logits, target) * NUM_ANSWERS).backward()
    return counter.get_total_flops() / 1e9


def matmul_gflops(n: int = 2048, iters: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def peak_memory(kind: str, batch: int, optimizer: str) -> float:
    """Peak RSS (MiB) of a fresh process doing 2 training steps of ``kind``."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys, resource; sys.argv=['x']; sys.path.insert(0, {here!r}); import bench_model as b;"
        f"from lxrt import LXRTConfig; m=b.build({kind!r}, LXRTConfig());"
        f"s=b.make_step(m, {optimizer!r}, b.make_inputs({batch})); s(); s();"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=5, help="measured steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--optimizer", choices=["adamw", "adamw-fused"], default="adamw",
                   help="the same optimizer for both models")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = LXRTConfig()
    inputs = make_inputs(args.batch)
    steps = {k: make_step(build(k, config), args.optimizer, inputs) for k in ("ours", "hf")}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.iters):
        for k, s in steps.items():
            times[k].append(s())
    mm = matmul_gflops()
    full = 3 * forward_flops(config, head_out=NUM_ANSWERS) / 1e9
    executed = {k: executed_gflops(build(k, config), inputs) / args.batch for k in steps}
    res = {}
    for k in steps:
        med = statistics.median(times[k])
        work = executed[k]
        res[k] = {
            "step_s": med,
            "examples_per_s": args.batch / med,
            "gflops_full_equiv": args.batch * full / med,
            "gflops_work_done": args.batch * work / med,
            "fraction_of_matmul": args.batch * work / med / mm,
        }
    if not args.no_memory:
        for k in steps:
            res[k]["peak_rss_mib"] = peak_memory(k, args.batch, args.optimizer)
    ratio = res["ours"]["examples_per_s"] / res["hf"]["examples_per_s"]
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, optimizer {args.optimizer}, "
          f"fp32 matmul 2048^3: {mm:.1f} GFLOP/s")
    print(f"{'model':8} {'step s':>8} {'ex/s':>8} {'GFLOP/s':>9} {'of matmul':>10} {'peak MiB':>9}")
    for k, r in res.items():
        print(f"{k:8} {r['step_s']:8.3f} {r['examples_per_s']:8.2f} {r['gflops_work_done']:9.1f} "
              f"{r['fraction_of_matmul']:10.1%} {r.get('peak_rss_mib', float('nan')):9.0f}")
    print(f"ours / HF examples/s: {ratio:.3f}x (goal >= 1.3x); executed per example (forward + backward): "
          f"ours {executed['ours']:.2f}, HF {executed['hf']:.2f} GFLOP ({full:.2f} by the 3x-forward convention)")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "matmul_gflops": mm, **res}, indent=2))


if __name__ == "__main__":
    main()
