"""Loop and data overhead: the VQA training step through the real loop and feature store against
the model alone, full LXMERT-base, same process.

The loop run reads generated obj36 features (36 x 2048) from a converted store, tokenizes in the
collate, and runs the shared loop (BertAdam, clipping, logging). The model-alone run repeats one
pre-built batch through forward, loss, backward, clipping and the same optimizer. The overhead is
1 - loop rate / model rate.

    PYTHONPATH=src python bench/bench_loop.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from datatools.synthetic import SyntheticConfig, generate  # noqa: E402
from engine import recipes  # noqa: E402
from engine.loop import STEPS_FILE, run  # noqa: E402
from engine.optim import BertAdam, clip_grad_norm  # noqa: E402
from lxrt import LXRTConfig  # noqa: E402
from tasks.vqa import VQATask  # noqa: E402


def loop_rate(data: Path, out: Path, batch: int, steps: int, warmup: int, workers: int, model: LXRTConfig) -> float:
    cfg = recipes.get("vqa_lxr955").replace(
        data_root=str(data), output=str(out), train="train", valid="", load_lxmert_qa="", from_scratch=True,
        batch_size=batch, epochs=1, max_steps=warmup + steps, num_workers=workers, progress=False, log_every=1,
        model=model,
    )
    run(VQATask(cfg), cfg, device="cpu")
    times = [json.loads(ln)["time"] for ln in (out / STEPS_FILE).read_text().splitlines()]
    per_step = statistics.median(b - a for a, b in zip(times[warmup:], times[warmup + 1 :]))
    return batch / per_step


def model_rate(data: Path, batch: int, steps: int, warmup: int, model: LXRTConfig) -> float:
    cfg = recipes.get("vqa_lxr955").replace(data_root=str(data), train="train", from_scratch=True, model=model)
    task = VQATask(cfg)
    dataset = task.dataset("train", train=True)
    batch_obj = task.collator(dataset)([dataset[i] for i in range(batch)])
    net = task.build_model().train()
    opt = BertAdam(net.parameters(), lr=5e-5, warmup=0.1, t_total=1000)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        out = task.forward(net, batch_obj)
        loss, _ = task.loss(out, batch_obj)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(net, 5.0)
        opt.step()
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
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    model = LXRTConfig() if args.model_config == "base" else LXRTConfig.tiny(visual_feat_dim=2048)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, SyntheticConfig(feat_dim=2048, coco_train_images=args.images), progress=False)
        alone = model_rate(data, args.batch, args.steps, args.warmup, model)
        looped = loop_rate(data, Path(tmp) / "run", args.batch, args.steps, args.warmup, args.workers, model)
    overhead = 1 - looped / alone
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.model_config} model, fp32 CPU")
    print(f"model alone:          {alone:8.2f} examples/s")
    print(f"loop + store + collate: {looped:6.2f} examples/s")
    print(f"loop/data overhead: {overhead:.1%} (goal < 10%)")
    if args.json:
        args.json.write_text(json.dumps({"model_alone": alone, "loop": looped, "overhead": overhead}, indent=2))


if __name__ == "__main__":
    main()
