"""The easy-VQA demo, end to end: raw images -> region features -> a small LXMERT trained from
scratch on the shared loop -> test predictions, metrics and plots.

    python -m demo.run_demo [--epochs N] [--batchSize B] [--lr LR] [--hidden H] [--max-minutes M]

Stages: prepare easy-VQA (extract features, write VQA-format JSON; reused when unchanged), train on
``train`` selecting on ``minival`` (``BEST.pth``), predict ``test`` with the selected weights, then
write ``metrics.json``, ``curves.png`` and ``predictions.png``. Everything lands in ``--output``
(default ``snap/demo``). A rerun with the same settings reuses the features and the snapshot and
only evaluates and reports; ``--fresh`` starts over; ``--resume`` continues a killed training.

The result is fixed by the recipe: its epochs always run, however slow the machine; a short speed
check only estimates the time up front. ``--max-minutes M`` is an opt-in budget: when the estimate
says the epochs would not fit, fewer run, and the run says so in its last lines and in
``metrics.json`` (``"cut_short": true``, ``epochs_done`` of ``epochs_planned``); such a snapshot is
never reused as a finished run.

numpy and torch are imported inside the functions, after the thread environment is set: BLAS and
OpenMP read it once, when they load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from demo.easy_vqa_data import EasyVQAData
    from demo.task import EasyVQATask
    from engine.config import TrainConfig

RECIPE = "easy_vqa_demo"
# A 2x2 grid plus the object's box: 5 regions per image. The object region alone answers every
# question; four coarse cells keep some layout for the cross-attention to use at a third of the
# cost of the 4x4 grid.
EXTRACTOR = "grid+object"
EXTRACTOR_OPTIONS = {"grid": 2}
STATE_FILE = "demo_state.json"
RUN_MARKERS = (STATE_FILE, "config.json", "run.log")  # files that only a run folder holds
TEST_SPLIT = "test"
# Fields that change where or how visibly a run happens, not what it learns.
VOLATILE_FIELDS = (
    "output",
    "test",
    "resume",
    "progress",
    "num_workers",
    "eval_batch_size",
    "log_every",
    "load",
)
EVAL_SPEEDUP = 3.0  # a forward pass costs about a third of a training step
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

log = logging.getLogger("lxmert.demo")


@dataclass
class DemoConfig:
    """The demo's knobs; ``None`` means the value of the ``easy_vqa_demo`` recipe."""

    data_root: str = "data"
    output: str = "snap/demo"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    hidden: int | None = None
    seed: int | None = None
    max_minutes: float = 0.0
    workers: int = 0
    threads: int = 0
    max_images: int | None = None
    fresh: bool = False
    resume: bool = False
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line; unset training knobs take the ``easy_vqa_demo`` recipe's values."""
    from demo.task import DEMO_RECIPE as r

    p = argparse.ArgumentParser(
        prog="python -m demo.run_demo",
        description="easy-VQA demo: extract region features from the raw images, train a small LXMERT from "
        "scratch (train split, model selection on minival), predict the test split and write metrics.json, "
        "curves.png and predictions.png into --output. A rerun with the same settings reuses the features "
        "and the trained snapshot.",
    )
    t = p.add_argument_group("training (defaults: the easy_vqa_demo recipe)")
    t.add_argument("--epochs", type=int, help=f"training epochs (default {r.epochs})")
    t.add_argument("--batchSize", dest="batch_size", type=int, help=f"batch size (default {r.batch_size})")
    t.add_argument("--lr", type=float, help=f"peak learning rate of {r.optim} (default {r.lr:g})")
    t.add_argument(
        "--hidden", type=int,
        help=f"hidden size, a multiple of 32; heads of 16, FFN twice as wide (default {r.model.hidden_size})",
    )  # fmt: skip
    t.add_argument("--seed", type=int, help=f"random seed (default {r.seed})")
    t.add_argument(
        "--max-minutes", dest="max_minutes", type=float, default=0.0,
        help="opt-in time budget for training: when a short speed check says the recipe's epochs would not "
        "fit, fewer run and the run is marked cut short (lower accuracy; never reused as finished). "
        "Default 0: no budget, the recipe's epochs always run",
    )  # fmt: skip
    m = p.add_argument_group("machine")
    m.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0: none)")
    m.add_argument(
        "--threads", type=int, default=0,
        help="torch threads (default 0: measure one thread and one per core, keep the faster)",
    )  # fmt: skip
    f = p.add_argument_group("files")
    f.add_argument("--output", default="snap/demo", help="run folder: snapshot, logs, predictions, plots")
    f.add_argument("--data-root", dest="data_root", default="data", help="features, JSON: ROOT/easy_vqa")
    f.add_argument("--max-images", dest="max_images", type=int, help="only the first N images of each split")
    f.add_argument("--fresh", action="store_true", help="re-extract the features and retrain from scratch")
    f.add_argument("--resume", action="store_true", help="continue a killed training from its last epoch")
    f.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def parse_args(argv: Sequence[str] | None = None) -> DemoConfig:
    set_thread_environment()  # the parser imports the recipe, and with it numpy and torch
    args = build_parser().parse_args(argv)
    demo = DemoConfig(**vars(args))
    checks = [
        (demo.epochs is None or demo.epochs >= 1, "--epochs must be >= 1"),
        (demo.batch_size is None or demo.batch_size >= 1, "--batchSize must be >= 1"),
        (demo.lr is None or demo.lr > 0, "--lr must be > 0"),
        (
            demo.hidden is None or (demo.hidden >= 32 and demo.hidden % 32 == 0),
            "--hidden must be a multiple of 32",
        ),
        (demo.max_minutes >= 0, "--max-minutes must be >= 0"),
        (demo.workers >= 0 and demo.threads >= 0, "--workers and --threads must be >= 0"),
        (demo.max_images is None or demo.max_images >= 10, "--max-images must be >= 10"),
        (not (demo.fresh and demo.resume), "--fresh and --resume exclude each other"),
    ]
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"demo.run_demo: error: {message}")
    return demo


def set_thread_environment() -> None:
    """Thread settings that only take effect before numpy and torch load (so a process that has
    numpy already, such as a test session, is left as it is):

    * one BLAS thread for numpy: threaded BLAS is slower than one thread on the small matrices
      of feature extraction;
    * OpenMP threads that sleep rather than spin while they wait: on a machine shared with other
      work, spinning torch threads that wait for each other at every small matrix product made
      training with two threads over 10x slower than with one (passive waiting costs ~10% on an
      idle machine and keeps two threads ahead of one on a busy one).
    """
    if "numpy" in sys.modules or "torch" in sys.modules:
        return
    for name in BLAS_THREAD_VARS:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset``), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def choose_threads(task: EasyVQATask) -> tuple[int, float]:
    """(torch threads, examples/s): the faster of one thread and one per core, measured.

    On a busy machine several threads that wait for each other at every small matrix product can
    be many times slower than one thread, while on an idle one they are faster.
    """
    import torch

    cores = usable_cores()
    speeds = {}
    for count in sorted({1, cores}):
        torch.set_num_threads(count)
        speeds[count] = measure_speed(task)
    best = max(speeds, key=speeds.get)
    torch.set_num_threads(best)
    shown = ", ".join(f"{n} thread(s) {v:.0f} examples/s" for n, v in speeds.items())
    log.info(f"speed check: {shown} -> {best} thread(s)")
    return best, speeds[best]


def clear_run_folder(path: Path, keep: Sequence[str] = ()) -> None:
    """Delete a previous demo run in ``path`` except the files named in ``keep``; refuse to touch a
    folder that is not a run folder."""
    if not path.exists():
        return
    if not any((path / name).is_file() for name in RUN_MARKERS) and any(path.iterdir()):
        raise SystemExit(f"{path} is not empty and holds no demo run ({STATE_FILE}); choose another --output")
    for entry in path.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def clear_prepared(root: Path) -> None:
    """Delete prepared easy-VQA data (a folder with the manifest the preparation writes)."""
    if (root / "manifest.json").is_file():
        shutil.rmtree(root)


def prepare(demo: DemoConfig) -> EasyVQAData:
    from demo.easy_vqa_data import describe, prepare_easy_vqa

    root = Path(demo.data_root) / "easy_vqa"
    if demo.fresh:
        clear_prepared(root)
    data = prepare_easy_vqa(
        root,
        EXTRACTOR,
        extractor_options=EXTRACTOR_OPTIONS,
        max_images=demo.max_images,
        progress=demo.progress,
    )
    log.info(describe(data))
    return data


def train_config(demo: DemoConfig) -> TrainConfig:
    """The ``easy_vqa_demo`` recipe with the knobs given on the command line."""
    from demo.task import demo_model
    from engine import recipes

    cfg = recipes.get(RECIPE)
    changes: dict[str, Any] = {
        "output": demo.output,
        "data_root": demo.data_root,
        "num_workers": demo.workers,
        "progress": demo.progress,
    }
    for name in ("epochs", "batch_size", "lr", "seed"):
        if getattr(demo, name) is not None:
            changes[name] = getattr(demo, name)
    if demo.hidden is not None:
        m = cfg.model
        changes["model"] = demo_model(
            demo.hidden, m.llayers, m.xlayers, m.rlayers, m.hidden_dropout_prob, m.visual_feat_dim
        )
    return cfg.replace(**changes)


def run_key(cfg: TrainConfig, data: EasyVQAData) -> dict[str, Any]:
    """What decides the trained weights: the recipe's settings and the data preparation (not the time
    budget: a run the budget cut short is marked so, and never counts as a finished run of the recipe)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in VOLATILE_FIELDS}
    manifest = json.loads((data.root / "manifest.json").read_text(encoding="utf-8"))
    return {"train": settings, "data": manifest.get("settings")}


def read_state(out: Path) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(out: Path, state: dict[str, Any]) -> None:
    from demo.report import write_json

    write_json(out / STATE_FILE, state)


def measure_speed(task: EasyVQATask, steps: int = 10, max_seconds: float = 4.0) -> float:
    """Training examples per second of ``task``'s model on this machine, from a few real steps.

    One untimed step first (allocation, lazy initialization); the timed ones stop after
    ``steps`` or ``max_seconds``, whichever comes first, so a slow setting costs little.
    """
    import torch

    from engine.optim import build_optimizer, clip_grad_norm

    cfg = task.cfg
    dataset = task.dataset(cfg.train, train=True)
    collate = task.collator(dataset)
    model = task.build_model()
    optimizer, scheduler = build_optimizer(model, cfg.optim, cfg.lr, steps + 1, cfg.warmup, cfg.weight_decay)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    model.train()
    start, seen = time.perf_counter(), 0
    for i in range(steps + 1):
        if i == 1:
            start, seen = time.perf_counter(), 0
        elif i > 1 and time.perf_counter() - start > max_seconds:
            break
        rows = [order[(i * cfg.batch_size + k) % len(order)] for k in range(cfg.batch_size)]
        batch = collate([dataset[r] for r in rows])
        loss, _ = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model, cfg.clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        seen += len(batch)
    return seen / (time.perf_counter() - start)


def epoch_seconds(data: EasyVQAData, rate: float) -> float:
    """Estimated seconds of one epoch (training plus the minival pass) at ``rate`` training examples/s."""
    train_n = data.counts.get("train", {}).get("questions") or len(data.load("train"))
    valid_n = data.counts.get("minival", {}).get("questions") or len(data.load("minival"))
    return train_n / rate + valid_n / (rate * EVAL_SPEEDUP)


def plan_epochs(cfg: TrainConfig, data: EasyVQAData, max_minutes: float, rate: float) -> int:
    """``cfg.epochs``, or fewer when at ``rate`` training examples/s they would not fit ``max_minutes``
    (0: no budget)."""
    epoch_s = epoch_seconds(data, rate)
    log.info(f"estimate: about {epoch_s:.0f} s per epoch at {rate:.0f} examples/s, "
             f"~{cfg.epochs * epoch_s / 60:.1f} min for the recipe's {cfg.epochs} epochs")  # fmt: skip
    if max_minutes <= 0:
        return cfg.epochs
    fit = int(max_minutes * 60 // epoch_s)
    if fit < cfg.epochs:
        log.warning(
            f"--max-minutes {max_minutes:g}: training {max(fit, 1)} of the recipe's {cfg.epochs} epochs (the "
            "schedule shortened to fit); the run will be marked cut short and its accuracy may be lower"
        )
        return max(fit, 1)
    return cfg.epochs


def train(cfg: TrainConfig, data: EasyVQAData, demo: DemoConfig, key: dict[str, Any]) -> float:
    """Train (or resume) into ``cfg.output``; returns the seconds spent."""
    import torch

    from demo.task import EasyVQATask
    from engine.loop import run
    from engine.state import RESUME_FILE

    out = Path(cfg.output)
    state = read_state(out)
    resume = bool(
        demo.resume
        and state.get("key") == key
        and not state.get("complete")
        and (out / RESUME_FILE).is_file()
    )
    if demo.resume and not resume:
        log.warning(f"--resume: no unfinished run with these settings in {out}; training from the start")
    start = time.perf_counter()
    rate = None
    if not resume:
        probe = EasyVQATask(cfg)  # its datasets and feature statistics load once for the checks
        if demo.threads == 0:
            _, rate = choose_threads(probe)
        else:
            rate = measure_speed(probe)
            log.info(f"speed check: {rate:.0f} examples/s with {torch.get_num_threads()} thread(s)")
    if resume:
        epochs = int(state["epochs"])
        log.info(f"resuming the training in {out} ({epochs} epochs planned)")
    else:
        clear_run_folder(out, keep=("run.log",))  # the log of this invocation is already open
        epochs = plan_epochs(cfg, data, demo.max_minutes, rate) if rate else cfg.epochs
    plan = {"key": key, "epochs": epochs, "epochs_planned": cfg.epochs, "cut_short": epochs < cfg.epochs,
            "max_minutes": demo.max_minutes if epochs < cfg.epochs else None}  # fmt: skip
    if resume:
        plan.update({k: state[k] for k in ("epochs_planned", "cut_short", "max_minutes") if k in state})
    write_state(out, {**plan, "complete": False})
    train_cfg = cfg.replace(epochs=epochs, test="", resume=resume)
    run(EasyVQATask(train_cfg), train_cfg)
    seconds = time.perf_counter() - start + float(state.get("train_seconds", 0.0) if resume else 0.0)
    write_state(out, {**plan, "complete": True, "train_seconds": seconds})
    return seconds


def evaluate(cfg: TrainConfig) -> None:
    """Predict the test split with the selected weights (``BEST.pth``); writes test_predict.json."""
    from demo.task import EasyVQATask
    from engine.loop import run

    best = Path(cfg.output) / "BEST.pth"
    if not best.is_file():
        raise FileNotFoundError(f"{best} not found: training did not save a selected snapshot")
    test_cfg = cfg.replace(train="", valid="", test=TEST_SPLIT, load=str(best), resume=False)
    run(EasyVQATask(test_cfg), test_cfg)


def summary(metrics: dict[str, Any], out: Path) -> str:
    head = f"easy-VQA {metrics['split']}: accuracy {metrics['accuracy'] * 100:.2f}%"
    lines = [f"{head} on {metrics['questions']} questions"]
    for qtype, m in metrics["per_question_type"].items():
        lines.append(f"  {qtype:<13} {m['accuracy'] * 100:6.2f}%  ({m['questions']} questions)")
    t = metrics["timings_s"]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if v is not None)
    lines.append(f"time: {stages}")
    if "train_examples_per_s" in metrics:
        lines.append(f"training speed: {metrics['train_examples_per_s']:.0f} examples/s")
    lines.append(
        f"files: {out}/ (metrics.json, curves.png, predictions.png, test_predict.json, BEST.pth, run.log)"
    )
    lines.append(f"ask the model about a picture:  bash run/ask.bash {example_image()} \"What color is the shape?\" "
                 f"--load {out / 'BEST'}")  # fmt: skip
    lines.append("or on a local web page:         bash run/serve.bash --load " + str(out / "BEST"))
    if metrics.get("cut_short"):
        lines += [
            "!" * 100,
            f"CUT SHORT: trained {metrics['epochs_done']} of the recipe's {metrics['epochs_planned']} epochs to fit "
            f"--max-minutes {metrics.get('max_minutes'):g};",
            "the accuracy above is not the recipe's result. Run again without --max-minutes for the full recipe "
            "(this snapshot is not reused).",
            "!" * 100,
        ]
    return "\n".join(lines)


def example_image() -> str:
    try:
        from demo.easy_vqa_data import image_path

        return str(image_path("test_0"))
    except (ImportError, ValueError, OSError):
        return "IMAGE"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the demo; returns the metrics written to ``<output>/metrics.json``."""
    begin = time.perf_counter()
    demo = parse_args(argv)
    import torch

    from demo.report import write_json, write_report
    from engine.report import setup_logging

    torch.set_num_threads(demo.threads or usable_cores())

    out = Path(demo.output)
    if demo.fresh:
        clear_run_folder(out)
    setup_logging(out, True)
    log.info(f"demo settings: {json.dumps(asdict(demo))}")

    start = time.perf_counter()
    data = prepare(demo)
    prepare_s = time.perf_counter() - start

    cfg = train_config(demo)
    key = run_key(cfg, data)
    state = read_state(out)
    same = state.get("complete") and state.get("key") == key and (out / "BEST.pth").is_file()
    reuse = bool(same and not state.get("cut_short"))
    if same and not reuse:
        log.warning(f"the snapshot in {out} was cut short ({state.get('epochs')} of {state.get('epochs_planned')} "
                    "epochs): training again, not reusing it")  # fmt: skip
    if reuse:
        log.info(f"reusing the trained snapshot {out / 'BEST.pth'} (same settings); --fresh retrains")
        train_s = None
    else:
        train_s = train(cfg, data, demo, key)
        state = read_state(out)

    start = time.perf_counter()
    evaluate(cfg)
    test_s = time.perf_counter() - start

    start = time.perf_counter()
    extra = {
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "epochs_planned": state.get("epochs_planned", state.get("epochs")),
        "epochs_done": state.get("epochs"),
        "cut_short": bool(state.get("cut_short")),
        "max_minutes": state.get("max_minutes"),
        "reused_snapshot": bool(reuse),
        "snapshot_train_seconds": state.get("train_seconds"),  # also known when the snapshot is reused
        "config": cfg.replace(epochs=state.get("epochs", cfg.epochs)).to_dict(),
        "timings_s": {"prepare": prepare_s, "train": train_s, "test": test_s},
    }
    metrics = write_report(out, data.load(TEST_SPLIT), extra=extra, seed=cfg.seed)
    metrics["timings_s"]["report"] = time.perf_counter() - start
    metrics["timings_s"]["total"] = time.perf_counter() - begin
    write_json(out / "metrics.json", metrics)
    log.info("\n" + summary(metrics, out))
    return metrics


if __name__ == "__main__":
    main()
