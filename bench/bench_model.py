"""Training-step speed of this LXMERT against HF ``transformers`` ``LxmertModel``, same run, same CPU.

Each step: forward on (B, 20) tokens and (B, 36, 2048) features, the VQA head (768 -> 1536 ->
3129), BCE x 3129 loss, backward, optimizer step; fp32. Steps of the two models are interleaved
so clock drift hits both alike; the medians are compared. Beside them: the same run's fp32
matrix-multiply rate, and the FLOP/s each model reaches (analytic 31.76 GFLOP per example for
the full computation; this model skips the work no answer head reads, so its "work done" is less).
Peak memory of each model's training step is measured in a fresh process of its own (``VmHWM``
of that process on a CPU, ``max_memory_allocated`` on a GPU), so one model's peak never shows in
the other's. On a GPU: ``--device cuda --amp bf16 [--compile]``.

This is a regression guard: on a CPU both models run at the machine's matrix-multiply limit, so
the ratio is ~1.0x; ``--min-ratio`` makes the script exit non-zero below a bound.

    PYTHONPATH=src python bench/bench_model.py --iters 5
"""

from __future__ import annotations

import argparse
import contextlib
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


def make_inputs(batch: int, seq: int = 20, boxes: int = 36, feat: int = 2048, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:, 14:] = 0
    f = torch.randn(batch, boxes, feat, generator=g).relu()
    xy = torch.rand(batch, boxes, 2, generator=g) * 0.5
    pos = torch.cat([xy, xy + 0.4], -1)
    target = (torch.rand(batch, NUM_ANSWERS, generator=g) > 0.999).float()
    return tuple(t.to(device) for t in (ids, mask, f, pos, target))


def build(kind: str, config: LXRTConfig, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    model = HFQAModel(config) if kind == "hf" else Classifier(config, NUM_ANSWERS, pooled_only=True)
    return model.to(device)


AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_step(model: nn.Module, optimizer: str, inputs, amp: str = "none", compile: bool = False):
    ids, mask, f, pos, target = inputs
    if optimizer == "adamw-fused":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    forward = torch.compile(model) if compile else model
    device = ids.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        autocast = (torch.autocast(device.type, dtype=AMP[amp]) if AMP[amp] is not None
                    else contextlib.nullcontext())
        with autocast:
            logits = forward(input_ids=ids, feats=f, boxes=pos, attention_mask=mask)
            loss = loss_fn(logits.float(), target) * NUM_ANSWERS
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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


def matmul_gflops(n: int = 2048, iters: int = 5, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def process_peak_mib(device: str) -> float:
    """This process's peak: ``VmHWM`` (resident memory high-water mark; reset by exec, unlike
    ``ru_maxrss``, which a child inherits from its parent) or the CUDA allocator's peak."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


def peak_memory(kind: str, batch: int, optimizer: str, device: str = "cpu", amp: str = "none") -> float:
    """Peak memory (MiB) of a fresh process doing 2 training steps of ``kind`` alone."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {here!r}); import bench_model as b;"
        f"from lxrt import LXRTConfig; m=b.build({kind!r}, LXRTConfig(), {device!r});"
        f"s=b.make_step(m, {optimizer!r}, b.make_inputs({batch}, device={device!r}), {amp!r}); s(); s();"
        f"print(b.process_peak_mib({device!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=5, help="measured steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--optimizer", choices=["adamw", "adamw-fused"], default="adamw",
                   help="the same optimizer for both models")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory subprocesses")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    p.add_argument("--amp", choices=sorted(AMP), default="none", help="autocast precision of both models")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 when ours/HF examples/s is below this")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.memory_only:
        mem = {k: peak_memory(k, args.batch, args.optimizer, device, args.amp) for k in ("ours", "hf")}
        print(f"device {device}, batch {args.batch}, amp {args.amp}: peak MiB of a fresh process per model: "
              + ", ".join(f"{k} {v:.0f}" for k, v in mem.items()))
        if args.json:
            args.json.write_text(json.dumps({"batch": args.batch, "device": device, "amp": args.amp,
                                             "peak_mib": mem}, indent=2))
        return
    config = LXRTConfig()
    inputs = make_inputs(args.batch, device=device)
    steps = {k: make_step(build(k, config, device), args.optimizer, inputs, args.amp, args.compile)
             for k in ("ours", "hf")}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.iters):
        for k, s in steps.items():
            times[k].append(s())
    mm = matmul_gflops(device=device)
    full = 3 * forward_flops(config, head_out=NUM_ANSWERS) / 1e9
    executed = {k: executed_gflops(build(k, config, device), inputs) / args.batch for k in steps}
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
            res[k]["peak_mib"] = peak_memory(k, args.batch, args.optimizer, device, args.amp)
    ratio = res["ours"]["examples_per_s"] / res["hf"]["examples_per_s"]
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, optimizer {args.optimizer}, "
          f"amp {args.amp}, compile {args.compile}, fp32 matmul 2048^3: {mm:.1f} GFLOP/s")
    print(f"{'model':8} {'step s':>8} {'ex/s':>8} {'GFLOP/s':>9} {'of matmul':>10} {'peak MiB':>9}")
    for k, r in res.items():
        print(f"{k:8} {r['step_s']:8.3f} {r['examples_per_s']:8.2f} {r['gflops_work_done']:9.1f} "
              f"{r['fraction_of_matmul']:10.1%} {r.get('peak_mib', float('nan')):9.0f}")
    print(f"ours / HF examples/s: {ratio:.3f}x (regression guard >= {args.min_ratio}); "
          "executed per example (forward + backward): "
          f"ours {executed['ours']:.2f}, HF {executed['hf']:.2f} GFLOP ({full:.2f} by the 3x-forward convention)")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "matmul_gflops": mm, "device": device, "amp": args.amp,
                                         "compile": args.compile, **res}, indent=2))
    if ratio < args.min_ratio:
        print(f"REGRESSION: ours / HF = {ratio:.3f}x < {args.min_ratio}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
