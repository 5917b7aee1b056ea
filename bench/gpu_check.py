"""One command for the GPU claims: precision, fine-tuning and pretraining speed, input pipeline, host syncs.

Prints one JSON object and writes it to ``bench/results/gpu-<device>.json`` (``--out`` elsewhere):

(a) ``bf16_vs_fp32``: the full-size VQA model (random weights, or ``--weights``) in fp32 and under
    bf16 autocast on synthetic questions: largest logit difference, answer agreement;
(b) ``vqa_steps``: VQA fine-tuning steps through the real loop and feature store at batch 32 and
    256, bf16, with and without ``--compile``: examples/s, MFU, peak device memory;
(c) ``input_pipeline``: the VQA DataLoader alone (store -> collate -> device) with 0/4/8 workers;
(d) ``pretrain``: a pretraining step (all four tasks) through the loop: examples/s, MFU;
(e) ``host_syncs``: reads of device values per training step (the difference between a long and a
    short run, so log and epoch-end reads cancel): counted Tensor reads, and on CUDA the warnings
    of ``torch.cuda.set_sync_debug_mode``.

Every section runs even when another fails (its error is recorded; the exit status is then 1).
``--tiny`` runs the same code on a small model and little data (CPU, about a minute): CI runs it.
Checkpoint writing is skipped inside the timed runs (it is not part of a training step).

    bash bench/gpu_check.sh            # on a GPU machine, < 8 min on one H100/H200
    bash bench/gpu_check.sh --tiny     # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from engine import recipes  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.flops import device_peak_flops, train_flops  # noqa: E402
from engine.loop import Trainer, run  # noqa: E402
from engine.syncs import HostSyncCounter, cuda_sync_warnings  # noqa: E402
from lxrt import LXRTConfig, read_state_dict  # noqa: E402
from pretrain.lxmert_pretrain import RECIPE as PRETRAIN_RECIPE  # noqa: E402
from pretrain.task import PretrainOptions, PretrainTask  # noqa: E402
from tasks.models import Classifier  # noqa: E402
from tasks.synthetic import SyntheticConfig, generate  # noqa: E402
from tasks.vqa import VQATask  # noqa: E402

NUM_ANSWERS = 3129
VQA_EPOCH = 632_117  # train + nominival questions per epoch (the original's logs)
PRETRAIN_EPOCH = 9_180_000  # image-sentence pairs per pretraining epoch
GOALS = {"mfu_batch256_bf16": 0.45, "vqa_4_epochs_min": 6.0, "pretrain_20_epochs_h": 6.0}


def device_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak device memory of the last run (CUDA); on CPU the process's peak RSS so far (VmHWM)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return math.nan


@contextlib.contextmanager
def timed_steps(device: torch.device, first: int, last: int, marks: dict[str, float]) -> Iterator[None]:
    """Record the wall clock (after draining the device) when training step ``first`` starts and
    when step ``last`` has finished; no other synchronisation is added to the loop."""
    original = Trainer._train_step
    count = {"n": 0}

    def step(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        if count["n"] == first:
            sync(device)
            marks["start"] = time.perf_counter()
        out = original(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == last:
            sync(device)
            marks["end"] = time.perf_counter()
        return out

    Trainer._train_step = step  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer._train_step = original  # type: ignore[method-assign]


@contextlib.contextmanager
def no_checkpoints() -> Iterator[None]:
    saved = (Trainer._checkpoint, Trainer._save_weights)
    Trainer._checkpoint = lambda self, *a, **k: None  # type: ignore[method-assign]
    Trainer._save_weights = lambda self, *a, **k: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer._checkpoint, Trainer._save_weights = saved  # type: ignore[method-assign]


class Check:
    """The settings of one invocation (full size on a device, or ``--tiny``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tiny = args.tiny
        self.device = torch.device(args.device if args.device != "auto" else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = (LXRTConfig.tiny(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                      visual_feat_dim=64) if self.tiny else LXRTConfig())
        self.amp = "bf16" if self.device.type == "cuda" or not self.tiny else "none"
        if args.amp:
            self.amp = args.amp
        self.batches = [8, 16] if self.tiny else [32, 256]
        self.warmup, self.steps = (1, 3) if self.tiny else (3, 6)
        self.questions = args.questions or (64 if self.tiny else 10_000)
        self.workers = [0, 2] if self.tiny else [0, 4, 8]
        self.compile = [False] if args.no_compile else [False, True]
        self.weights = args.weights
        self.peak = device_peak_flops(self.device)
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.data = self.tmp / "data"

    def make_data(self) -> None:
        need = max(self.batches) * (self.warmup + self.steps) + max(self.batches)
        images = -(-need // 3) + 8
        sizes = dict(coco_train_images=images, coco_val_images=16, minival_images=8, vg_images=max(32, images // 4),
                     nlvr2_train_sets=4, nlvr2_valid_sets=2, nlvr2_test_sets=2)
        cfg = SyntheticConfig(seed=0, feat_dim=self.model.visual_feat_dim, sizes=sizes)
        generate(self.data, cfg, progress=False)

    def vqa_cfg(self, name: str, **changes: Any) -> TrainConfig:
        base = dict(data_root=str(self.data), output=str(self.tmp / name), train="train", valid="",
                    load_lxmert_qa="", from_scratch=True, epochs=1, progress=False, log_every=10**6,
                    amp=self.amp, model=self.model)
        return recipes.get("vqa_lxr955").replace(**{**base, **changes})

    def timed_run(self, task_of: Callable[[TrainConfig], Any], cfg: TrainConfig) -> dict[str, float]:
        """Examples/s between the end of warm-up and the last step of a loop run."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        torch._dynamo.reset()
        marks: dict[str, float] = {}
        last = self.warmup + self.steps
        with no_checkpoints(), timed_steps(self.device, self.warmup, last, marks):
            run(task_of(cfg), cfg.replace(max_steps=last), device=str(self.device))
        if "end" not in marks:
            raise RuntimeError(f"the run stopped before step {last}")
        return {"examples_per_s": cfg.batch_size * self.steps / (marks["end"] - marks["start"]),
                "peak_memory_gib": peak_memory_gib(self.device)}

    # ------------------------------------------------------------------------------------- sections
    @torch.no_grad()
    def bf16_vs_fp32(self) -> dict[str, Any]:
        torch.manual_seed(0)
        model = Classifier(self.model, NUM_ANSWERS)
        if self.weights:
            model.load_state_dict(read_state_dict(self.weights))
        model = model.to(self.device).eval()
        g = torch.Generator().manual_seed(1)
        batch, worst, agree, count = 500 if not self.tiny else 32, 0.0, 0, 0
        for start in range(0, self.questions, batch):
            b = min(batch, self.questions - start)
            ids = torch.randint(1000, 30000 if not self.tiny else self.model.vocab_size, (b, 20), generator=g)
            mask = (torch.arange(20)[None] < torch.randint(5, 21, (b, 1), generator=g)).long()
            feats = torch.randn(b, 36, self.model.visual_feat_dim, generator=g).relu()
            xy = torch.rand(b, 36, 2, generator=g) * 0.5
            boxes = torch.cat([xy, xy + 0.4], -1)
            inputs = [t.to(self.device) for t in (ids, feats, boxes, mask)]
            ref = model(inputs[0], inputs[1], inputs[2], attention_mask=inputs[3]).float()
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                low = model(inputs[0], inputs[1], inputs[2], attention_mask=inputs[3]).float()
            worst = max(worst, float((ref - low).abs().max()))
            agree += int((ref.argmax(-1) == low.argmax(-1)).sum())
            count += b
        return {"questions": count, "max_abs_logit_diff": worst, "answer_agreement": agree / count,
                "weights": self.weights or "random init (seed 0)"}

    def vqa_steps(self) -> list[dict[str, Any]]:
        rows = []
        flops = train_flops(self.model)
        for compiled in self.compile:
            for batch in self.batches:
                cfg = self.vqa_cfg(f"vqa_{batch}_{int(compiled)}", batch_size=batch, compile=compiled)
                res = self.timed_run(VQATask, cfg)
                rate = res["examples_per_s"]
                rows.append({"batch": batch, "amp": self.amp, "compile": compiled, **res,
                             "mfu": rate * flops / self.peak if self.peak else None,
                             "vqa_4_epochs_min": 4 * VQA_EPOCH / rate / 60})
        return rows

    def input_pipeline(self) -> list[dict[str, Any]]:
        from torch.utils.data import DataLoader

        batch = max(self.batches)
        task = VQATask(self.vqa_cfg("pipe", batch_size=batch))
        dataset = task.dataset("train", train=True)
        rows = []
        for workers in self.workers:
            loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                collate_fn=task.collator(dataset), pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(0))
            it, n, t0 = iter(loader), 0, 0.0
            for i, b in enumerate(it):
                b = b.to(self.device, non_blocking=True)
                if i == 0:  # worker start-up is not throughput
                    sync(self.device)
                    t0 = time.perf_counter()
                else:
                    n += len(b)
            sync(self.device)
            rows.append({"workers": workers, "batch": batch, "batches": n // batch,
                         "examples_per_s": n / (time.perf_counter() - t0) if n else math.nan})
        return rows

    def pretrain(self) -> dict[str, Any]:
        from torch.utils.flop_counter import FlopCounterMode

        batch = 8 if self.tiny else 64
        cfg = recipes.get(PRETRAIN_RECIPE).replace(
            data_root=str(self.data), output=str(self.tmp / "pre"), train="mscoco_train", valid="", batch_size=batch,
            epochs=1, progress=False, log_every=10**6, amp=self.amp, model=self.model)
        res = self.timed_run(lambda c: PretrainTask(c, PretrainOptions()), cfg)
        task = PretrainTask(cfg, PretrainOptions())
        dataset = task.dataset(cfg.train, train=True)
        sample = task.collator(dataset)([dataset[i] for i in range(4)]).to(self.device)
        model = task.build_model().to(self.device).train()
        with FlopCounterMode(display=False) as counter:
            loss, _ = task.loss(task.forward(model, sample), sample)
            loss.backward()
        flops = counter.get_total_flops() / 4
        rate = res["examples_per_s"]
        return {"batch": batch, "amp": self.amp, **res, "gflop_per_example": flops / 1e9,
                "mfu": rate * flops / self.peak if self.peak else None,
                "pretrain_20_epochs_h": 20 * PRETRAIN_EPOCH / rate / 3600}

    def host_syncs(self) -> dict[str, Any]:
        short, long = 2, 2 + (4 if self.tiny else 6)
        batch = min(self.batches)
        counts = {}
        for steps in (short, long):
            counter = HostSyncCounter()
            original = VQATask.collator
            VQATask.collator = lambda self, ds, _o=original, _c=counter: _c.pausing(_o(self, ds))  # type: ignore
            cuda = cuda_sync_warnings() if self.device.type == "cuda" else contextlib.nullcontext([])
            try:
                with no_checkpoints(), counter, cuda as warned:
                    cfg = self.vqa_cfg(f"sync_{steps}", batch_size=batch, max_steps=steps)
                    run(VQATask(cfg), cfg, device=str(self.device))
            finally:
                VQATask.collator = original  # type: ignore[method-assign]
            counts[steps] = (counter.total, len(warned), dict(counter.calls))
        extra = long - short
        return {"batch": batch, "runs": {str(k): {"tensor_reads": v[0], "cuda_sync_warnings": v[1], "by_method": v[2]}
                                         for k, v in counts.items()},
                "tensor_reads_per_step": (counts[long][0] - counts[short][0]) / extra,
                "cuda_syncs_per_step": (counts[long][1] - counts[short][1]) / extra
                if self.device.type == "cuda" else None}


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = result.get("vqa_steps") or []
    big = [r for r in rows if isinstance(r, dict) and r.get("batch") == 256]
    if big and big[0].get("mfu") is not None:
        best = max(r["mfu"] for r in big)
        out["mfu_batch256_bf16"] = {"value": best, "goal": GOALS["mfu_batch256_bf16"],
                                    "met": best >= GOALS["mfu_batch256_bf16"]}
    if rows and all(isinstance(r, dict) for r in rows):
        fastest = min(r["vqa_4_epochs_min"] for r in rows)
        out["vqa_4_epochs_min"] = {"value": fastest, "goal": GOALS["vqa_4_epochs_min"],
                                   "met": fastest < GOALS["vqa_4_epochs_min"]}
    pre = result.get("pretrain")
    if isinstance(pre, dict) and "pretrain_20_epochs_h" in pre:
        h = pre["pretrain_20_epochs_h"]
        out["pretrain_20_epochs_h"] = {"value": h, "goal": GOALS["pretrain_20_epochs_h"],
                                       "met": h < GOALS["pretrain_20_epochs_h"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small model and data (CPU, about a minute; what CI runs)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], help="precision of the timed runs (default bf16)")
    p.add_argument("--no-compile", action="store_true", help="skip the --compile runs")
    p.add_argument("--questions", type=int, help="synthetic questions for (a) (default 10000; 64 with --tiny)")
    p.add_argument("--weights", help="a fine-tuned VQA snapshot for (a) instead of random weights")
    p.add_argument("--only", help="comma-separated sections to run (default: all)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/gpu-<device>[-tiny].json)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    check = Check(args)
    sections = ["bf16_vs_fp32", "vqa_steps", "input_pipeline", "pretrain", "host_syncs"]
    chosen = args.only.split(",") if args.only else sections
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        p.error(f"--only: unknown sections {unknown}; known: {', '.join(sections)}")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(check.device) if check.device.type == "cuda" else platform.processor()
        or "cpu",
        "torch": torch.__version__, "tiny": check.tiny, "amp": check.amp,
        "model": "tiny" if check.tiny else "LXMERT-base 9/5/5", "peak_flops": check.peak,
    }
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the runs' logs go to stderr: stdout is the JSON alone
        check.make_data()
        timings["data"] = round(time.perf_counter() - t, 2)
        for name in chosen:
            t = time.perf_counter()
            try:
                result[name] = getattr(check, name)()
            except Exception as e:  # every section runs; the failure is reported
                errors[name] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            timings[name] = round(time.perf_counter() - t, 2)
    result["goals"] = verdicts(result)
    result["errors"] = errors
    result["seconds"] = {**timings, "total": round(time.perf_counter() - started, 2)}
    text = json.dumps(result, indent=2, default=str)
    suffix = "-tiny" if check.tiny else ""
    out = args.out or ROOT / "bench" / "results" / f"gpu-{device_slug(check.device)}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
