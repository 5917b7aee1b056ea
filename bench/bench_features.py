"""Benchmark: original-style in-RAM TSV loading vs the memory-mapped feature store.

On a generated obj36 TSV (N images of 36 x 2048 float32, about half zeros like ReLU output) it
measures (1) time and peak RSS (VmHWM) to get ready to serve batches, each in a fresh subprocess:
decoding every line into a dict of numpy arrays as the original loader does, vs opening the store;
(2) TSV -> store conversion throughput; (3) random-access batch throughput from the store with a
warm page cache. It prints a table, ratios, the goals, and an extrapolation to VQA's 123,287 images.

    PYTHONPATH=src python bench/bench_features.py --images 500     # smoke run, seconds
    PYTHONPATH=src python bench/bench_features.py                   # 5000 images, ~2 GB of TSV
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from features.tsv import FIELDNAMES, RegionRecord, write_tsv  # noqa: E402

VQA_IMAGES = 123_287  # COCO train2014 + val2014 images used by VQA
GOAL_RSS_FRACTION = 0.05
GOAL_OPEN_S = 1.0
GOAL_EXAMPLES_PER_S = 20_000


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


# ---- data ----------------------------------------------------------------------------------------


def synthetic_records(images: int, boxes: int, dim: int, seed: int = 0) -> Iterator[RegionRecord]:
    """Detector-like records; features come from a small pool of ReLU blocks to keep generation fast."""
    rng = np.random.default_rng(seed)
    pool = [np.maximum(rng.standard_normal((boxes, dim), dtype=np.float32), 0) for _ in range(8)]
    for i in range(images):
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        xy = rng.uniform(0, 0.5, (boxes, 2)) * (w, h)
        wh = rng.uniform(0, 0.5, (boxes, 2)) * (w, h)
        yield RegionRecord(
            img_id=f"COCO_train2014_{i:012d}",
            img_h=h,
            img_w=w,
            objects_id=rng.integers(0, 1600, boxes),
            objects_conf=rng.random(boxes, dtype=np.float32),
            attrs_id=rng.integers(0, 400, boxes),
            attrs_conf=rng.random(boxes, dtype=np.float32),
            boxes=np.concatenate([xy, xy + wh], axis=1).astype(np.float32),
            features=pool[i % len(pool)],
        )


# ---- children: each runs in a fresh interpreter so that VmHWM is its own -------------------------


def load_in_ram(tsv: Path) -> dict[str, dict]:
    """Decode every line into a dict of numpy arrays, the way the original loader does."""
    csv.field_size_limit(sys.maxsize)
    data = {}
    decode = [
        ("objects_id", np.int64, False),
        ("objects_conf", np.float32, False),
        ("attrs_id", np.int64, False),
        ("attrs_conf", np.float32, False),
        ("boxes", np.float32, True),
        ("features", np.float32, True),
    ]
    with open(tsv, newline="") as f:
        for item in csv.DictReader(f, FIELDNAMES, delimiter="\t"):
            for key in ("img_h", "img_w", "num_boxes"):
                item[key] = int(item[key])
            for key, dtype, two_d in decode:
                arr = np.frombuffer(base64.b64decode(item[key]), dtype=dtype)
                item[key] = arr.reshape(item["num_boxes"], -1) if two_d else arr
                item[key].setflags(write=False)
            data[item["img_id"]] = item
    return data


def child_inram(tsv: Path, batch: int, batches: int) -> dict:
    start = time.perf_counter()
    data = load_in_ram(tsv)
    ready_s = time.perf_counter() - start
    ready_mb = peak_rss_mb()
    ids = list(data)
    rng = np.random.default_rng(1)

    def example(img_id: str) -> tuple[np.ndarray, np.ndarray]:
        info = data[img_id]  # per-example copy + normalization, as the original __getitem__ does
        boxes = info["boxes"].copy()
        boxes[:, (0, 2)] /= info["img_w"]
        boxes[:, (1, 3)] /= info["img_h"]
        return info["features"].copy(), boxes

    start = time.perf_counter()
    for _ in range(batches):
        pairs = [example(ids[j]) for j in rng.integers(0, len(ids), batch)]
        np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    serve = batch * batches / (time.perf_counter() - start)
    return {"ready_s": ready_s, "ready_mb": ready_mb, "serving_mb": peak_rss_mb(), "examples_per_s": serve}


def child_store(store_dir: Path, batch: int, batches: int) -> dict:
    from features.store import FeatureStore

    start = time.perf_counter()
    store = FeatureStore(store_dir)
    store.index(store.ids[-1])  # ids read, index built, arrays mapped: ready to serve
    store._map()
    ready_s = time.perf_counter() - start
    ready_mb = peak_rss_mb()
    rng = np.random.default_rng(1)
    ids = store.ids
    start = time.perf_counter()
    for _ in range(batches):
        store.gather([ids[j] for j in rng.integers(0, len(ids), batch)])
    serve = batch * batches / (time.perf_counter() - start)
    return {"ready_s": ready_s, "ready_mb": ready_mb, "serving_mb": peak_rss_mb(), "examples_per_s": serve}


def child_baseline() -> dict:
    return {"ready_s": 0.0, "ready_mb": peak_rss_mb(), "serving_mb": peak_rss_mb(), "examples_per_s": 0.0}


def run_child(kind: str, path: Path, batch: int, batches: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--child-path", str(path),
           "--batch", str(batch), "--batches", str(batches)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- parent --------------------------------------------------------------------------------------


def batch_throughput(store_dir: Path, batch: int, batches: int, device: str = "cpu") -> dict[str, float]:
    """Examples/s of random batches from a warm page cache, per output type (and, on a GPU, copied
    to the device through pinned memory and cast to float32 there, as the training loop does)."""
    import torch

    from features.store import FeatureStore

    store = FeatureStore(store_dir)
    with open(store_dir / "features.npy", "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    ids = store.ids
    rng = np.random.default_rng(2)
    draws = [[ids[j] for j in rng.integers(0, len(ids), batch)] for _ in range(batches)]
    cases = {
        f"gather -> numpy {store.dtype.name} (store dtype)": lambda b: store.gather(b, dtype=None),
        "gather -> numpy float32": lambda b: store.gather(b, dtype=np.float32),
        "gather -> torch float32 (cast by torch)": lambda b: torch.from_numpy(
            store.gather(b, dtype=None)[0]
        ).float(),
    }
    if device != "cpu":
        dev = torch.device(device)
        cases[f"gather -> {device} float32 (pinned copy, cast on the device)"] = lambda b: torch.from_numpy(
            store.gather(b, dtype=None)[0]
        ).pin_memory().to(dev, non_blocking=True).float()

    def drain() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    out = {}
    for name, fn in cases.items():
        fn(draws[0])
        drain()
        start = time.perf_counter()
        for b in draws:
            fn(b)
        drain()
        out[name] = batch * batches / (time.perf_counter() - start)
    return out


def goal(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="images in the generated TSV")
    parser.add_argument("--boxes", type=int, default=36, help="regions per image")
    parser.add_argument("--dim", type=int, default=2048, help="feature width")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="store dtype")
    parser.add_argument("--batch", type=int, default=256, help="batch size for throughput")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the TSV and store "
                        "(default: a temporary directory, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when present), cpu, cuda: also time batches copied to the device. "
                             "(--amp/--compile have no meaning here: no model runs)")
    parser.add_argument("--child", choices=("inram", "store", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--child-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = {"inram": lambda: child_inram(args.child_path, args.batch, args.batches),
                  "store": lambda: child_store(args.child_path, args.batch, args.batches),
                  "baseline": child_baseline}[args.child]()
        print(json.dumps(result))
        return 0
    if args.images < 1 or args.boxes < 1 or args.dim < 1 or args.batch < 1 or args.batches < 1:
        parser.error("--images, --boxes, --dim, --batch and --batches must be positive")

    from features.convert import convert_tsv

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below when killed
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_features."))
    workdir.mkdir(parents=True, exist_ok=True)
    tsv = workdir / "bench_obj36.tsv"
    store_dir = workdir / "bench_obj36.store"
    try:
        print(f"Generating {args.images} images x {args.boxes} x {args.dim} into {tsv} ...", file=sys.stderr)
        start = time.perf_counter()
        write_tsv(tsv, synthetic_records(args.images, args.boxes, args.dim))
        tsv_gb = tsv.stat().st_size / 1e9
        print(f"  {tsv_gb:.2f} GB in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        conv = convert_tsv(tsv, store_dir, dtype=args.dtype, progress=True)
        # The children's serving rate is a side figure: a few batches keep the smoke run short.
        few = max(1, args.batches // 4)
        base = run_child("baseline", tsv, args.batch, 1)
        inram = run_child("inram", tsv, args.batch, few)
        store = run_child("store", store_dir, args.batch, few)
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        served = batch_throughput(store_dir, args.batch, args.batches, device)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    n = args.images
    b0 = base["ready_mb"]
    print(f"\n{n} images x {args.boxes} regions x {args.dim}: TSV {tsv_gb:.2f} GB, store dtype {args.dtype}, "
          f"interpreter+numpy baseline {b0:.0f} MB")
    rows = [
        ("", "in-RAM (original)", "feature store", "store / in-RAM"),
        ("time to ready (s)", f"{inram['ready_s']:.2f}", f"{store['ready_s']:.3f}",
         f"{store['ready_s'] / inram['ready_s']:.4f}"),
        ("peak RSS when ready (MB)", f"{inram['ready_mb']:.0f}", f"{store['ready_mb']:.0f}",
         f"{store['ready_mb'] / inram['ready_mb']:.3f}"),
        ("  above baseline (MB)", f"{inram['ready_mb'] - b0:.0f}", f"{store['ready_mb'] - b0:.0f}",
         f"{(store['ready_mb'] - b0) / max(inram['ready_mb'] - b0, 1e-9):.3f}"),
        (f"peak RSS serving {args.batch}-batches (MB)", f"{inram['serving_mb']:.0f}",
         f"{store['serving_mb']:.0f}",
         f"{store['serving_mb'] / inram['serving_mb']:.3f}"),
        ("batches -> float32 numpy (ex/s)", f"{inram['examples_per_s']:,.0f}",
         f"{store['examples_per_s']:,.0f}",
         f"{store['examples_per_s'] / inram['examples_per_s']:.2f}"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    for r in rows:
        print(f"{r[0]:<{width}}{r[1]:>20}{r[2]:>16}{r[3]:>16}")

    print(f"\nconversion: {conv.images} images in {conv.seconds:.2f} s = {conv.images_per_s:,.0f} images/s, "
          f"store {conv.bytes_written / 1e9:.2f} GB")
    print(f"\nrandom {args.batch}-image batches from the store, warm page cache ({args.batches} batches):")
    for name, rate in served.items():
        print(f"  {name:<42}{rate:>12,.0f} examples/s")

    fraction = store["ready_mb"] / inram["ready_mb"]
    best = max(served.values())
    print("\ngoals:")
    print(f"  store peak RSS < {GOAL_RSS_FRACTION:.0%} of in-RAM when ready: {fraction:.1%} -> "
          f"{goal(fraction < GOAL_RSS_FRACTION)}"
          + (" (the interpreter baseline dominates at this size; try --images 5000)" if n < 2000 else ""))
    print(f"  store open < {GOAL_OPEN_S:.0f} s: {store['ready_s']:.3f} s -> "
          f"{goal(store['ready_s'] < GOAL_OPEN_S)}")
    print(f"  batch throughput >= {GOAL_EXAMPLES_PER_S:,} examples/s (best path): {best:,.0f} -> "
          f"{goal(best >= GOAL_EXAMPLES_PER_S)}")

    scale = VQA_IMAGES / n
    per_image_mb = (inram["ready_mb"] - b0) / n
    print(f"\nextrapolated to VQA ({VQA_IMAGES:,} COCO images, linear in the image count):")
    print(f"  in-RAM: {per_image_mb:.2f} MB/image -> {per_image_mb * VQA_IMAGES / 1024:.1f} GB per process, "
          f"{inram['ready_s'] * scale / 60:.1f} min to load")
    print(f"  store:  {conv.bytes_written / n / 1e6:.2f} MB/image on disk -> "
          f"{conv.bytes_written * scale / 1e9:.1f} GB, "
          f"converted once in {conv.seconds * scale / 60:.1f} min; "
          f"open <= {store['ready_s'] * scale:.2f} s (the id list grows), "
          f"RSS when ready ~ {b0 + (store['ready_mb'] - b0) * scale:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
