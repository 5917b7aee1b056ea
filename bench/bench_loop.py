"""Loop and data overhead: the VQA training step through the real loop and feature store against
the model alone, full LXMERT-base, same process.

The loop run reads generated obj36 features (36 x 2048) from a converted store, tokenizes in the
collate, and runs the shared loop (BertAdam, clipping, logging). The model-alone run repeats one
pre-built batch (already on the device) through forward, loss, backward, clipping and the same
optimizer, under the same autocast. The overhead is 1 - loop rate / model rate. A negative overhead
beyond noise is impossible (the loop does the model's work and more): the script then rejects the
run and exits 2 instead of reporting it.

    PYTHONPATH=src python bench/bench_loop.py --steps 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from engine import recipes  # noqa: E402
from engine.loop import STEPS_FILE, autocast_dtype, run  # noqa: E402
from engine.optim import BertAdam, clip_grad_norm  # noqa: E402
from lxrt import LXRTConfig  # noqa: E402
from tasks.synthetic import SyntheticConfig, generate  # noqa: E402
from tasks.vqa import VQATask  # noqa: E402


def loop_rate(data: Path, out: Path, batch: int, steps: int, warmup: int, workers: int, model: LXRTConfig,
              device: str, amp: str, compile: bool) -> float:
    cfg = recipes.get("vqa_lxr955").replace(
        data_root=str(data), output=str(out), train="train", valid="", load_lxmert_qa="", from_scratch=True,
        batch_size=batch, epochs=1, max_steps=warmup + steps, num_workers=workers, progress=False, log_every=1,
        model=model, amp=amp, compile=compile,
    )
    run(VQATask(cfg), cfg, device=device)
    times = [json.loads(ln)["time"] for ln in (out / STEPS_FILE).read_text().splitlines()]
    per_step = statistics.median(b - a for a, b in zip(times[warmup:], times[warmup + 1 :]))
    return batch / per_step


def model_rate(data: Path, batch: int, steps: int, warmup: int, model: LXRTConfig, device: str, amp: str,
               compile: bool) -> float:
    cfg = recipes.get("vqa_lxr955").replace(data_root=str(data), train="train", from_scratch=True, model=model)
    task = VQATask(cfg)
    dataset = task.dataset("train", train=True)
    dev = torch.device(device)
    batch_obj = task.collator(dataset)([dataset[i] for i in range(batch)]).to(dev)
    net = task.build_model().to(dev).train()
    fwd = torch.compile(net) if compile else net
    opt = BertAdam(net.parameters(), lr=5e-5, warmup=0.1, t_total=1000)
    dtype = autocast_dtype(amp, dev)
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            out = task.forward(fwd, batch_obj)
            loss, _ = task.loss(out, batch_obj)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(net, 5.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="measured steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the loop run")
    p.add_argument("--images", type=int, default=300, help="generated training images (3 questions each)")
    p.add_argument("--model-config", default="base", help="base or tiny")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="autocast of both runs (auto: bf16 on a GPU, fp32 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in both runs")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    run_opts = dict(device=device, amp=args.amp, compile=args.compile)
    model = LXRTConfig() if args.model_config == "base" else LXRTConfig.tiny(visual_feat_dim=2048)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, SyntheticConfig(feat_dim=2048, sizes=dict(coco_train_images=args.images)), progress=False)
        alone = model_rate(data, args.batch, args.steps, args.warmup, model, **run_opts)
        looped = loop_rate(data, Path(tmp) / "run", args.batch, args.steps, args.warmup, args.workers, model,
                           **run_opts)
    overhead = 1 - looped / alone
    print(f"device {device}, amp {args.amp}, compile {args.compile}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.model_config} model")
    print(f"model alone:          {alone:8.2f} examples/s")
    print(f"loop + store + collate: {looped:6.2f} examples/s")
    print(f"loop/data overhead: {overhead:.1%} (goal < 10%)")
    if args.json:
        args.json.write_text(json.dumps({"model_alone": alone, "loop": looped, "overhead": overhead,
                                         **run_opts}, indent=2))
    if overhead < -0.05:
        print(f"REJECTED: the loop ran {-overhead:.0%} faster than the model alone, which cannot be; the "
              "machine was too noisy for this measurement", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
