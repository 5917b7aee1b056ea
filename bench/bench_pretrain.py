"""Pretraining speed: all four LXMERT tasks, full-size model, through the real loop and feature store,
beside the VQA fine-tuning step in the same run; plus FLOPs per example and a projection of the
original 20-epoch schedule (9.18M image-sentence pairs per epoch).

On a CPU it runs fp32; on a GPU it runs bf16 autocast and reports model FLOPs utilization.
Sanity check: a pretraining example executes at least the work of a fine-tuning one (about 32.5
vs 29 GFLOP), so pretraining more than 1.5x faster than fine-tuning (or 3x slower) means the
machine's load changed between the two runs; the script then rejects the run and exits 2.

    PYTHONPATH=src python bench/bench_pretrain.py --batch 8 --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from engine import recipes  # noqa: E402
from engine.flops import device_peak_flops  # noqa: E402
from engine.loop import STEPS_FILE, run  # noqa: E402
from lxrt import LXRTConfig  # noqa: E402
from pretrain.lxmert_pretrain import RECIPE  # noqa: E402
from pretrain.task import PretrainOptions, PretrainTask  # noqa: E402
from tasks.synthetic import SyntheticConfig, generate  # noqa: E402
from tasks.vqa import VQATask  # noqa: E402

PAIRS_PER_EPOCH = 9_180_000
EPOCHS = 20


def rate_from_steps(out: Path, batch: int, warmup: int) -> float:
    times = [json.loads(ln)["time"] for ln in (out / STEPS_FILE).read_text().splitlines()]
    return batch / statistics.median(b - a for a, b in zip(times[warmup:], times[warmup + 1 :]))


def train_flops_per_example(task, batch_size: int) -> float:
    """Executed forward + backward FLOPs of one training batch, per example."""
    dataset = task.dataset(task.cfg.train, train=True)
    batch = task.collator(dataset)([dataset[i] for i in range(batch_size)])
    model = task.build_model().train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = task.loss(task.forward(model, batch), batch)
        loss.backward()
    return counter.get_total_flops() / batch_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="global batch (the released run used 256)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = LXRTConfig()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        sizes = dict(coco_train_images=args.images, vg_images=args.images)
        generate(data, SyntheticConfig(feat_dim=2048, sizes=sizes),
                 progress=False)
        common = dict(data_root=str(data), batch_size=args.batch, epochs=1, max_steps=args.warmup + args.steps,
                      progress=False, log_every=1, amp=args.amp, compile=args.compile, valid="", model=model)
        pcfg = recipes.get(RECIPE).replace(output=str(Path(tmp) / "pre"), train="mscoco_train", **common)
        ptask = PretrainTask(pcfg, PretrainOptions())
        run(ptask, pcfg, device=str(device))
        results["pretrain"] = rate_from_steps(Path(pcfg.output), args.batch, args.warmup)
        fcfg = recipes.get("vqa_lxr955").replace(output=str(Path(tmp) / "ft"), train="train", load_lxmert_qa="",
                                                 from_scratch=True, **common)
        run(VQATask(fcfg), fcfg, device=str(device))
        results["finetune"] = rate_from_steps(Path(fcfg.output), args.batch, args.warmup)
        flops = train_flops_per_example(PretrainTask(pcfg, PretrainOptions()), min(args.batch, 4))
    total = flops * PAIRS_PER_EPOCH * EPOCHS
    print(f"device {device}, batch {args.batch}, amp {args.amp}, compile {args.compile}")
    print(f"pretraining (4 tasks): {results['pretrain']:.2f} examples/s")
    print(f"VQA fine-tuning step:  {results['finetune']:.2f} examples/s "
          f"(pretraining / fine-tuning = {results['pretrain'] / results['finetune']:.2f})")
    print(f"executed training FLOPs per pretraining example: {flops / 1e9:.2f} GFLOP")
    measured_h = PAIRS_PER_EPOCH * EPOCHS / results["pretrain"] / 3600
    print(f"20 epochs x 9.18M pairs at the measured rate on this device: {measured_h:,.0f} h")
    peak = device_peak_flops(device)
    if peak:
        print(f"MFU: {results['pretrain'] * flops / peak:.1%}")
    h100 = 989e12
    for mfu in (0.3, 0.45):
        print(f"projection on one H100 at {mfu:.0%} MFU (bf16 dense peak 989 TFLOP/s): "
              f"{total / (h100 * mfu) / 3600:.1f} h")
    if args.json:
        args.json.write_text(json.dumps({**results, "gflop_per_example": flops / 1e9,
                                         "hours_measured_device": measured_h, "device": str(device),
                                         "amp": args.amp, "compile": args.compile}, indent=2))
    ratio = results["pretrain"] / results["finetune"]
    if not 1 / 3 <= ratio <= 1.5:
        print(f"REJECTED: pretraining / fine-tuning = {ratio:.2f}, outside the plausible 0.33-1.5; the "
              "machine's load changed between the runs", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
