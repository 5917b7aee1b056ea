"""Feature-extraction speed of the ``butd`` detector against the HF LXMERT demo's FRCNN port, same run.

Both get the same photographs (``skimage.data``: astronaut, coffee, chelsea, rocket, written as PNG)
and the same ``pytorch_model.bin`` (``--weights``, or random weights of the released layout written by
``features.butd.weights``). The HF port (huggingface/transformers
``examples/research_projects/lxmert/{modeling_frcnn,processing_image,utils}.py``, not part of this
project) runs in a subprocess of its own Python environment, which needs torch and torchvision; this
file is its driver (``--hf-worker``). Rounds are interleaved photo by photo (port, ours hf-demo, ours
lxmert), so load changes hit all alike; per-photo medians are compared.

Checks (``hf-demo`` preset against the port, per photo): the network input size, the same boxes
(within 1e-4 of the image's longer side) and object ids in the same order, features within 1e-4 relative
(max |a - b| / max |b|); attribute ids and confidences are reported. Beside the speed: the FLOPs of
one photo counted by ``torch.utils.flop_counter`` on ours, and the fraction of the same run's matrix-
multiply rate (fp32 on CPU, bf16 with ``--amp bf16``) that this work per second reaches.

    PYTHONPATH=src python bench/bench_extract.py --hf-python /path/to/venv/bin/python --hf-dir /path/to/port
    PYTHONPATH=src python bench/bench_extract.py --photos 2 --no-hf                    # ours only
    PYTHONPATH=src python bench/bench_extract.py --device cuda --amp bf16 --batch 8    # GPU throughput

``--hf-dir`` holds the three port files (and ``tv_cpu_shim.py`` with its stub libraries when
torchvision needs them to import on a CPU-only torch) and ``config.yaml``, the port's config
(``--hf-config`` may name a ``.yaml`` or ``.json`` elsewhere). Without ``--hf-python``/``--hf-dir``
the port is skipped with a message. On a GPU the port is not run (its torchvision here is CPU-only);
ours reports images/s at the chosen precision and the projected time for NLVR2's ~107k images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PRESETS = ("hf-demo", "lxmert")
NLVR2_IMAGES = 107_000
BOX_RTOL, FEAT_RTOL = 1e-4, 1e-4  # boxes: of the longer image side


# ---- the HF port's side (runs under --hf-python) ----------------------------------------------------------


def hf_worker(args: argparse.Namespace) -> None:
    """Serve photos to the HF port: one JSON request per stdin line, one JSON answer per stdout line."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the port prints progress; keep stdout for the protocol
    hf_dir = str(Path(args.hf_dir).resolve())
    sys.path.insert(0, hf_dir)
    if (Path(hf_dir) / "tv_cpu_shim.py").is_file():
        import tv_cpu_shim  # noqa: F401  (lets torchvision's CUDA wheel load its CPU kernels)
    from modeling_frcnn import GeneralizedRCNN
    from processing_image import Preprocess
    from utils import Config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_path = Path(args.hf_config)
    raw = json.loads(cfg_path.read_text()) if cfg_path.suffix == ".json" else Config.load_yaml(str(cfg_path))
    cfg = Config(raw)
    model = GeneralizedRCNN.from_pretrained(str(args.weights), config=cfg)
    pre = Preprocess(cfg)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), file=proto)
    for line in sys.stdin:
        req = json.loads(line)
        t = time.perf_counter()
        images, sizes, scales_yx = pre(req["photo"])
        out = model(images, sizes, scales_yx=scales_yx, padding="max_detections",
                    max_detections=cfg.MAX_DETECTIONS, return_tensors="pt")
        seconds = time.perf_counter() - t
        n = int(out["preds_per_image"][0])
        np.savez(
            req["out"],
            boxes=out["boxes"][0][:n].numpy(),
            normalized_boxes=out["normalized_boxes"][0][:n].numpy(),
            objects_id=out["obj_ids"][0][:n].numpy(),
            objects_conf=out["obj_probs"][0][:n].numpy(),
            attrs_id=out["attr_ids"][0][:n].numpy(),
            attrs_conf=out["attr_probs"][0][:n].numpy(),
            features=out["roi_features"][0][:n].numpy(),
            net_size=sizes[0].numpy(),
        )
        print(json.dumps({"seconds": seconds}), file=proto)


class HFPort:
    """The port in a long-lived subprocess, so its model is loaded once and rounds can interleave."""

    def __init__(self, python: str, hf_dir: Path, config: Path, weights: Path, threads: int, log: Path) -> None:
        cmd = [python, str(Path(__file__).resolve()), "--hf-worker", "--hf-dir", str(hf_dir),
               "--hf-config", str(config), "--weights", str(weights), "--threads", str(threads)]
        self.log = log
        self.log_file = open(log, "w")  # noqa: SIM115 (open as long as the subprocess runs)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_file, text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-3000:] if self.log.is_file() else ""
            raise RuntimeError(f"the HF port's process ended (log {self.log}):\n{tail}")
        return json.loads(line)

    def __call__(self, photo: Path, out: Path) -> tuple[float, dict[str, np.ndarray]]:
        self.proc.stdin.write(json.dumps({"photo": str(photo), "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        seconds = self._read()["seconds"]
        with np.load(out) as z:
            return seconds, {k: z[k] for k in z.files}

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log_file.close()


# ---- ours --------------------------------------------------------------------------------------------------


def write_photos(folder: Path, count: int) -> list[Path]:
    try:
        from skimage import data
    except ImportError:
        sys.exit("bench_extract: needs scikit-image for its photographs (pip install scikit-image)")
    paths = []
    for name in PHOTOS[:count]:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    return paths


def build_ours(preset: str, args: argparse.Namespace, weights: Path):
    import features.butd  # noqa: F401 - registers the butd extractor
    from features.extractors import create_extractor

    ext = create_extractor("butd", weights=str(weights), preset=preset, device=args.device, amp=args.amp)
    if args.compile:
        ext.model.backbone.compile(dynamic=True)
        ext.model.roi_heads.res5.compile(dynamic=True)
    return ext


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(ext, photo: Path, device: str):
    sync(device)
    t = time.perf_counter()
    with Image.open(photo) as im:
        regions = ext(im)
    sync(device)
    return time.perf_counter() - t, regions


def count_flops(ext, photo: Path) -> float:
    """FLOPs (matmul/conv, multiply-add = 2) of one photo through ``ext``."""
    from torch.utils.flop_counter import FlopCounterMode

    with Image.open(photo) as im, FlopCounterMode(display=False) as counter:
        ext(im)
    return float(counter.get_total_flops())


def matmul_gflops(device: str, amp: str, n: int = 2048, iters: int = 5) -> float:
    """The same run's dense matrix-multiply rate (fp32, or bf16 with ``--amp bf16`` on a GPU)."""
    dtype = torch.bfloat16 if (amp == "bf16" and device.startswith("cuda")) else torch.float32
    n = 8192 if device.startswith("cuda") else n
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(iters):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


# ---- comparison --------------------------------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def compare(regions, ref: dict[str, np.ndarray], net_size: tuple[int, int] | None, side: int) -> dict:
    """How ours (``Regions``) differs from the port's outputs on one photo whose longer side is ``side``
    pixels; ``ok`` when they agree."""
    boxes, feats = np.asarray(regions.boxes, np.float64), np.asarray(regions.features, np.float64)
    rboxes, rfeats = ref["boxes"].astype(np.float64), ref["features"].astype(np.float64)
    res: dict = {"boxes": [len(boxes), len(rboxes)], "net_size": [list(net_size or ()), ref["net_size"].tolist()]}
    res["same_net_size"] = net_size is None or list(net_size) == ref["net_size"].tolist()
    if len(boxes) == len(rboxes):
        res["box_max_abs_px"] = float(np.abs(boxes - rboxes).max()) if len(boxes) else 0.0
        res["same_boxes"] = bool(np.abs(boxes - rboxes).max(initial=0.0) <= BOX_RTOL * side)
        res["same_object_ids"] = bool(np.array_equal(regions.objects_id, ref["objects_id"]))
        res["object_conf_max_abs"] = float(np.abs(regions.objects_conf - ref["objects_conf"]).max())
        res["same_attr_ids"] = bool(np.array_equal(regions.attrs_id, ref["attrs_id"]))
        res["attr_conf_max_abs"] = float(np.abs(regions.attrs_conf - ref["attrs_conf"]).max())
        res["feature_rel"] = float(np.abs(feats - rfeats).max() / max(np.abs(rfeats).max(), 1e-12))
    else:
        res["same_boxes"] = res["same_object_ids"] = False
    if not res["same_boxes"] and len(boxes) and len(rboxes):
        # Pair each of the port's boxes with ours of the highest IoU: how much of the set is shared.
        iou = iou_matrix(rboxes, boxes)
        best = iou.argmax(1)
        close = iou.max(1) > 0.99
        res["matched_iou_0.99"] = int(close.sum())
        if close.any():
            res["matched_same_ids"] = int((regions.objects_id[best[close]] == ref["objects_id"][close]).sum())
            diff = np.abs(feats[best[close]] - rfeats[close]).max()
            res["matched_feature_rel"] = float(diff / max(np.abs(rfeats).max(), 1e-12))
    res["ok"] = bool(res["same_net_size"] and res["same_boxes"] and res["same_object_ids"]
                     and res.get("feature_rel", 1.0) <= FEAT_RTOL)
    return res


# ---- main --------------------------------------------------------------------------------------------------


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(times: list[float]) -> dict:
    med = statistics.median(times)
    return {"seconds": times, "median_s": med, "images_per_s": 1.0 / med}


def throughput(ext, photos: list[Path], copies: int, batch: int, device: str) -> dict:
    """Images/s of ``ext.run`` over ``copies`` of each photo, batched by network size (preprocessing,
    done by data-loading workers in a real extraction, is timed apart)."""
    t = time.perf_counter()
    prepared = []
    for p in photos:
        with Image.open(p) as im:
            prepared.append(ext.preprocess(im))
    prep_s = (time.perf_counter() - t) / len(photos)
    work = prepared * copies
    ext.run(work[:batch], max_batch=batch)  # warm-up (kernels, allocator, compile)
    sync(device)
    t = time.perf_counter()
    ext.run(work, max_batch=batch)
    sync(device)
    elapsed = time.perf_counter() - t
    ips = len(work) / elapsed
    return {"images": len(work), "batch": batch, "seconds": elapsed, "images_per_s": ips,
            "preprocess_s_per_image_cpu": prep_s, "nlvr2_projection_min": NLVR2_IMAGES / ips / 60}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, help="pytorch_model.bin for both (default: random weights, --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--photos", type=int, default=4, choices=range(1, len(PHOTOS) + 1), metavar="N",
                   help=f"how many of {', '.join(PHOTOS)} (default %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="timed passes over the photos (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed photos per detector first (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the port runs only on CPU)")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="our detector's precision")
    p.add_argument("--compile", action="store_true", help="torch.compile our backbone and res5 head")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (0: torch's default)")
    p.add_argument("--throughput", action="store_true",
                   help="also time batched runs over --copies of each photo (always on with a GPU)")
    p.add_argument("--batch", type=int, default=8, help="images per forward in the throughput run")
    p.add_argument("--copies", type=int, default=16, help="copies of each photo in the throughput run")
    p.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS), help="our presets to time")
    p.add_argument("--hf-python", help="Python of an environment with torch + torchvision for the HF port")
    p.add_argument("--hf-dir", type=Path, help="folder with the port's modeling_frcnn.py, processing_image.py, "
                   "utils.py (+ tv_cpu_shim.py) and config.yaml")
    p.add_argument("--hf-config", type=Path, help="the port's config (.yaml or .json; default HF_DIR/config.yaml)")
    p.add_argument("--no-hf", action="store_true", help="time ours only")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting passes")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "extract.json",
                   help="raw results (JSON; the report goes beside it as .txt)")
    p.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.hf_worker:
        hf_worker(args)
        return

    sys.path.insert(0, str(ROOT / "src"))
    from lxrt.fileio import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    res: dict = {"argv": sys.argv[1:], "device": args.device, "amp": args.amp, "compile": args.compile,
                 "threads": torch.get_num_threads(), "torch": torch.__version__, "load_before": load_avg()}
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract."))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photos = write_photos(tmp, args.photos)
    weights = args.weights
    if weights is None:
        from features.butd.weights import save_random_weights

        weights = save_random_weights(tmp / "pytorch_model.bin", args.seed)
    res["weights"] = str(args.weights or f"random (seed {args.seed})")

    port = None
    hf_config = args.hf_config or (args.hf_dir / "config.yaml" if args.hf_dir else None)
    if args.no_hf:
        say("HF port: skipped (--no-hf)")
    elif cuda:
        say("HF port: skipped on a GPU run (its torchvision here is CPU-only); ours alone is timed")
    elif not (args.hf_python and args.hf_dir and Path(args.hf_python).is_file() and hf_config.is_file()):
        say("HF port: skipped: give --hf-python (a Python with torch + torchvision) and --hf-dir (the port's "
            "modeling_frcnn.py, processing_image.py, utils.py and config.yaml); see this file's docstring")
    else:
        port = HFPort(args.hf_python, args.hf_dir, hf_config, weights, torch.get_num_threads(),
                      args.out.with_suffix(".hf.log"))
        res["hf_worker"] = port.info

    ours = {preset: build_ours(preset, args, weights) for preset in args.presets}
    res["matmul_gflops_before"] = matmul_gflops(args.device, args.amp)

    for _ in range(args.warmup):
        small = min(photos, key=lambda q: q.stat().st_size)
        if port:
            port(small, tmp / "warm.npz")
        for ext in ours.values():
            run_ours(ext, small, args.device)

    times: dict[str, dict[str, list[float]]] = {k: {q.stem: [] for q in photos} for k in ["hf", *ours]}
    checks: dict[str, dict] = {}
    for r in range(args.rounds):
        order = ["hf", *ours] if r % 2 == 0 else [*reversed(list(ours)), "hf"]
        for photo in photos:
            ref = None
            for who in order:
                if who == "hf":
                    if port is None:
                        continue
                    dt, ref = port(photo, tmp / f"{photo.stem}.npz")
                else:
                    dt, regions = run_ours(ours[who], photo, args.device)
                    if who == "hf-demo" and r == 0:
                        ours_hf = regions
                times[who][photo.stem].append(dt)
                say(f"round {r + 1} {photo.stem:10} {who:8} {dt:8.2f} s")
            if r == 0 and ref is not None and "hf-demo" in ours:
                with Image.open(photo) as im:
                    net = ours["hf-demo"].preprocess(im).net_size if hasattr(ours["hf-demo"], "preprocess") else None
                    side = max(im.size)
                checks[photo.stem] = compare(ours_hf, ref, net, side)
    res["matmul_gflops_after"] = matmul_gflops(args.device, args.amp)
    mm = max(res["matmul_gflops_before"], res["matmul_gflops_after"])
    if port:
        port.close()

    # Per detector: median seconds of each photo; images/s = photos / sum of medians.
    per: dict[str, dict] = {}
    for who, by_photo in times.items():
        if not any(by_photo.values()):
            continue
        med = {k: statistics.median(v) for k, v in by_photo.items()}
        per[who] = {"per_photo": {k: summary(v) for k, v in by_photo.items()},
                    "images_per_s": len(med) / sum(med.values()), "mean_s": sum(med.values()) / len(med)}
    if not args.no_flops:
        for who, ext in ours.items():
            flops = {q.stem: count_flops(ext, q) for q in photos}
            mean = sum(flops.values()) / len(flops)
            per[who]["gflop_per_photo"] = {k: v / 1e9 for k, v in flops.items()}
            per[who]["gflops_rate"] = mean / 1e9 * per[who]["images_per_s"]
            per[who]["fraction_of_matmul"] = per[who]["gflops_rate"] / mm
            if who == "hf-demo" and "hf" in per:  # the same work, done by the port
                per["hf"]["gflops_rate"] = mean / 1e9 * per["hf"]["images_per_s"]
                per["hf"]["fraction_of_matmul"] = per["hf"]["gflops_rate"] / mm
    res["detectors"] = per
    res["checks"] = checks
    if cuda or args.throughput:
        res["throughput"] = {who: throughput(ext, photos, args.copies, args.batch, args.device)
                             for who, ext in ours.items()}
        for who, g in res["throughput"].items():
            if "gflop_per_photo" in per[who]:
                flops = per[who]["gflop_per_photo"]
                g["fraction_of_matmul"] = sum(flops.values()) / len(flops) * g["images_per_s"] / mm
    res["load_after"] = load_avg()

    say("")
    say(f"{args.device}, amp {args.amp}, compile {args.compile}, threads {res['threads']}, torch {torch.__version__}; "
        f"load average {res['load_before']} -> {res['load_after']}; weights {res['weights']}")
    say(f"matrix multiply ({'bf16' if cuda and args.amp == 'bf16' else 'fp32'}), same run: {mm:.1f} GFLOP/s")
    say(f"{'detector':9} {'s/photo':>8} {'images/s':>9} {'GFLOP/photo':>12} {'GFLOP/s':>8} {'of matmul':>10}")
    for who, d in per.items():
        gf = d.get("gflop_per_photo")
        gfp = f"{sum(gf.values()) / len(gf):12.0f}" if gf else f"{'(as hf-demo)' if who == 'hf' else '':>12}"
        rate = f"{d['gflops_rate']:8.1f} {d['fraction_of_matmul']:10.1%}" if "gflops_rate" in d else ""
        say(f"{who:9} {d['mean_s']:8.2f} {d['images_per_s']:9.4f} {gfp} {rate}")
    if "hf" in per:
        for who in ours:
            ratio = per[who]["images_per_s"] / per["hf"]["images_per_s"]
            res[f"ratio_{who}_vs_hf"] = ratio
            say(f"ours ({who}) / HF port images/s: {ratio:.2f}x" + ("  (goal >= 2x)" if who == "hf-demo" else
                                                                     "  (a different setting: 600 px, per-class NMS)"))
    for name, c in checks.items():
        verdict = "SAME" if c["ok"] else "DIFFERENT"
        detail = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items() if k != "ok")
        say(f"check hf-demo vs HF port, {name}: {verdict} ({detail})")
    if checks:
        res["all_same"] = all(c["ok"] for c in checks.values())
    for who, g in res.get("throughput", {}).items():
        frac = f", {g['fraction_of_matmul']:.1%} of matmul" if "fraction_of_matmul" in g else ""
        say(f"batched {who} on {args.device}: {g['images_per_s']:.3f} images/s ({g['images']} images, batch "
            f"{g['batch']}{frac}); "
            f"NLVR2 {NLVR2_IMAGES:,} images: {g['nlvr2_projection_min']:.1f} min "
            f"(+ {g['preprocess_s_per_image_cpu']:.3f} s/image of CPU preprocessing, spread over loader workers)")
    atomic_write(args.out, lambda t: t.write_text(json.dumps(res, indent=2)))
    atomic_write(args.out.with_suffix(".txt"), lambda t: t.write_text("\n".join(lines) + "\n"))
    say(f"wrote {args.out} and {args.out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
