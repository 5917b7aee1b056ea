"""Synthetic data roots in the original layout and formats, with a learnable signal: the framework.

Every image has a dominant colour and shape. Most of its regions show that colour/shape pair (the
rest show random ones); a region's feature is ``relu(P_colour + P_shape + noise)`` for fixed random
prototypes (the same for every task and file, as one detector would give), its ``attrs_id`` is the
colour index and its ``objects_id`` the shape index (below 6 and 5, so small test models with few
object/attribute classes can predict them). Texts about an image state or ask its dominant colour
or shape in words of the real BERT vocabulary, so a model that reads both the text and the regions
can learn every task.

Each task owns its synthetic data, in its own module: it registers a writer with
``@register_synthetic(task, files, sizes=..., reads=...)``. The writer gets a ``Generator`` whose
random stream depends only on the seed and the task's name (adding or removing a task changes no
other task's files) and the task's own size options (a frozen dataclass with defaults; every field
becomes a ``--flag`` of the command line). A writer that reads files another task writes (a shared
feature file has one owner; the others read it) declares them in ``reads`` and runs after their
owner. Two tasks declaring one file, or one size option, are an error naming both; registering the
same definition twice (``python -m tasks.X`` imports its module twice) is not.

A task can also offer its labelled questions to other tasks' synthetic data (``offer_questions``):
a pretraining corpus asks ``read_offers`` for them, as the original's corpus holds the task
questions of its images under the task's name.

Run ``python -m tasks.synthetic --out data_synth`` (``--help`` lists every size of every task).
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from engine.plugins import discover
from features.tsv import RegionRecord, iter_tsv, write_tsv
from lxrt.fileio import atomic_write_text
from lxrt.progress import progress_bar
from tasks.registry import same_definition

COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "white", "black")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
PROTOTYPES_STREAM = "region feature prototypes"  # shared by every task: one feature space


@dataclass(frozen=True)
class SyntheticConfig:
    """What every task's synthetic data shares: seed, feature size, noise; ``sizes`` sets the size
    options tasks declare (by name, e.g. ``{"coco_train_images": 300}``; others keep their defaults)."""

    seed: int = 0
    feat_dim: int = 64
    num_boxes: int = 36
    questions_per_image: int = 3
    dominant_fraction: float = 0.6
    noise: float = 0.5
    sizes: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.feat_dim < 1 or self.num_boxes < 1:
            raise ValueError("feat_dim and num_boxes must be >= 1")
        if self.questions_per_image < 0 or self.noise < 0:
            raise ValueError("questions_per_image and noise must be >= 0")
        if not 0.0 <= self.dominant_fraction <= 1.0:
            raise ValueError("dominant_fraction must be a fraction")
        object.__setattr__(self, "sizes", dict(self.sizes))

    def replace(self, **changes: Any) -> SyntheticConfig:
        """A copy with ``changes``: shared fields by their name, anything else as a size option."""
        shared = {f.name for f in fields(self)} - {"sizes"}
        base = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sizes"}
        base.update({k: v for k, v in changes.items() if k in shared})
        sizes = {**self.sizes, **{k: v for k, v in changes.items() if k not in shared}}
        return SyntheticConfig(**base, sizes=sizes)


@dataclass(frozen=True)
class Image:
    """One synthetic image: its id and dominant attributes."""

    img_id: str
    color: str
    shape: str


def prototypes(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """The colour and shape prototypes of region features (one pair of tables for every task)."""
    rng = np.random.default_rng([config.seed, zlib.crc32(PROTOTYPES_STREAM.encode("utf-8"))])
    colors = rng.normal(0.0, 1.0, (len(COLORS), config.feat_dim)).astype(np.float32)
    return colors, rng.normal(0.0, 1.0, (len(SHAPES), config.feat_dim)).astype(np.float32)


class Generator:
    """Drawing primitives on one task's random stream (``stream``: the task's name).

    ``cfg`` is the shared config, ``sizes`` the task's own size options (None if it declares
    none), ``progress`` whether writers show progress bars.
    """

    def __init__(self, config: SyntheticConfig, stream: str, sizes: Any = None, progress: bool = False) -> None:
        self.cfg = config
        self.stream = stream
        self.sizes = sizes
        self.progress = progress
        self.rng = np.random.default_rng([config.seed, zlib.crc32(stream.encode("utf-8"))])
        self.color_protos, self.shape_protos = prototypes(config)
        self._used_numbers: set[int] = set()

    # ---- images -------------------------------------------------------------------------------

    def unique_number(self, low: int, high: int) -> int:
        """A number in ``[low, high)`` this generator has not returned before (for unique ids)."""
        while True:
            n = int(self.rng.integers(low, high))
            if n not in self._used_numbers:
                self._used_numbers.add(n)
                return n

    def image(self, img_id: str, color: str | None = None, shape: str | None = None) -> Image:
        """An image with the given (or a random) dominant colour and shape."""
        color = color if color is not None else COLORS[self.rng.integers(len(COLORS))]
        shape = shape if shape is not None else SHAPES[self.rng.integers(len(SHAPES))]
        return Image(img_id, color, shape)

    def record(self, img: Image) -> RegionRecord:
        """The image's regions: mostly the dominant colour/shape (always the first), the rest random."""
        cfg, rng, n = self.cfg, self.rng, self.cfg.num_boxes
        dominant = rng.random(n) < cfg.dominant_fraction
        dominant[0] = True  # the first region shows the dominant pair (``read_images`` relies on it)
        colors = np.where(dominant, COLORS.index(img.color), rng.integers(len(COLORS), size=n))
        shapes = np.where(dominant, SHAPES.index(img.shape), rng.integers(len(SHAPES), size=n))
        noise = rng.normal(0.0, cfg.noise, (n, cfg.feat_dim)).astype(np.float32)
        feats = np.maximum(self.color_protos[colors] + self.shape_protos[shapes] + noise, 0.0)
        img_h, img_w = (int(x) for x in rng.integers(240, 640, size=2))
        scale = np.where(dominant, 0.5, 0.25)[:, None]
        wh = rng.uniform(0.1, 1.0, (n, 2)) * scale * (img_w, img_h) + 2.0
        x1y1 = rng.uniform(0.0, 1.0, (n, 2)) * ((img_w, img_h) - wh)
        boxes = np.concatenate([x1y1, x1y1 + wh], axis=1).astype(np.float32)
        conf = np.where(dominant, rng.uniform(0.6, 1.0, n), rng.uniform(0.2, 0.6, n)).astype(np.float32)
        return RegionRecord(
            img_id=img.img_id,
            img_h=img_h,
            img_w=img_w,
            objects_id=shapes.astype(np.int64),
            objects_conf=conf,
            attrs_id=colors.astype(np.int64),
            attrs_conf=(conf * rng.uniform(0.5, 1.0, n)).astype(np.float32),
            boxes=boxes,
            features=feats.astype(np.float32),
        )

    # ---- texts ----------------------------------------------------------------------------------

    def other(self, values: Sequence[str], not_this: str) -> str:
        """One of ``values`` other than ``not_this``."""
        choices = [v for v in values if v != not_this]
        return choices[self.rng.integers(len(choices))]

    def maybe(self, value: str, values: Sequence[str]) -> str:
        """``value`` half of the time, another of ``values`` otherwise (balanced yes/no questions)."""
        return value if self.rng.random() < 0.5 else self.other(values, value)

    def caption(self, img: Image) -> str:
        """A sentence describing the image's dominant colour and shape."""
        templates = (
            "A {c} {s} in the picture.",
            "There is a {c} {s} in the image.",
            "A photo of a {c} {s}.",
            "Some {c} objects and a large {s}.",
        )
        return templates[self.rng.integers(len(templates))].format(c=img.color, s=img.shape)


def yes(flag: bool) -> str:
    """The answer to a yes/no question whose truth is ``flag``."""
    return "yes" if flag else "no"


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """``data`` as JSON at ``path`` (folders created, written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=indent))


def write_features(path: Path, gen: Generator, images: Sequence[Image]) -> int:
    """The obj36 TSV of ``images`` (region records drawn from ``gen``, in order); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(images), f"synthetic {path.name}", unit="img", enabled=gen.progress)

    def records() -> Iterator[RegionRecord]:
        for img in images:
            yield gen.record(img)
            bar.update(1)

    try:
        write_tsv(path, records())
    finally:
        bar.close()
    return len(images)


def read_images(path: Path) -> list[Image]:
    """The images of a synthetic obj36 TSV, in file order, with the dominant pair of each (its first
    region's); how a task reads the images of a feature file another task owns."""
    return [
        Image(rec.img_id, COLORS[int(rec.attrs_id[0])], SHAPES[int(rec.objects_id[0])]) for rec in iter_tsv(path)
    ]


# ---- the registry ---------------------------------------------------------------------------------

SyntheticWriter = Callable[[Generator, Path], dict[str, int]]
"""``write(gen, out)``: write a task's files under the data root ``out``; returns counts per file."""


@dataclass(frozen=True)
class SyntheticTask:
    """A task's synthetic data: the files it writes (relative to the root), how, its size options
    (a dataclass type or None) and the files of other tasks it reads (or a function listing them)."""

    name: str
    files: tuple[str, ...]
    write: SyntheticWriter
    sizes: type | None = None
    reads: tuple[str, ...] | Callable[[], Sequence[str]] = ()

    def read_files(self) -> tuple[str, ...]:
        return tuple(self.reads() if callable(self.reads) else self.reads)

    def options(self) -> list[Any]:
        """The task's size options (dataclass fields)."""
        return list(fields(self.sizes)) if self.sizes is not None else []


@dataclass(frozen=True)
class OfferedQuestions:
    """A task's labelled questions, as another task's synthetic data may use them.

    ``questions``: image id -> [(sentence, label {answer: score})]; ``answers``: the answers these
    labels use that belong to the task's answer table; ``held_out``: images the task evaluates on
    (kept out of training data); ``hidden``: test images whose labels are secret (kept out of all).
    """

    questions: dict[str, list[tuple[str, dict[str, float]]]]
    answers: frozenset[str]
    held_out: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()


QuestionReader = Callable[[Path], OfferedQuestions]


def offered_from(
    paths: Sequence[Path], table: Collection[str], held_out: Collection[str] = (), hidden: Collection[str] = ()
) -> OfferedQuestions:
    """The labelled questions of JSON record files (``img_id``, ``sent``, ``label``), in file order;
    ``answers`` are the labels' answers found in ``table``."""
    questions: dict[str, list[tuple[str, dict[str, float]]]] = {}
    answers: set[str] = set()
    for path in paths:
        for rec in json.loads(Path(path).read_text(encoding="utf-8")):
            questions.setdefault(rec["img_id"], []).append((rec["sent"], rec["label"]))
            answers.update(a for a in rec["label"] if a in table)
    return OfferedQuestions(questions, frozenset(answers), frozenset(held_out), frozenset(hidden))


def image_ids(path: Path) -> set[str]:
    """The ``img_id`` of every record of a JSON record file."""
    return {rec["img_id"] for rec in json.loads(Path(path).read_text(encoding="utf-8"))}


@dataclass(frozen=True)
class QuestionOffer:
    """``read(out)`` reads a task's questions from its ``files`` under the data root ``out``."""

    task: str
    files: tuple[str, ...]
    read: QuestionReader


_SYNTHETIC: dict[str, SyntheticTask] = {}
_OFFERS: dict[str, QuestionOffer] = {}


def _where(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    return f"{getattr(fn, '__qualname__', repr(fn))} ({code.co_filename if code else '?'})"


def _check_path(task: str, rel: str) -> str:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"synthetic data of task {task!r}: {rel!r} is not a path inside the data root")
    return str(path)


def register_synthetic(
    task: str,
    files: Sequence[str],
    *,
    sizes: type | None = None,
    reads: Sequence[str] | Callable[[], Sequence[str]] = (),
) -> Callable[[SyntheticWriter], SyntheticWriter]:
    """Decorator: ``write(gen, out)`` writes task ``task``'s ``files`` into every synthetic root.

    ``sizes``: a frozen dataclass of the task's size options (every field with an int or float
    default; ``__post_init__`` checks them), given to the writer as ``gen.sizes``. ``reads``: files
    of other tasks the writer reads (it runs after their writers), or a function listing them.
    """
    if sizes is not None and not (is_dataclass(sizes) and isinstance(sizes, type)):
        raise TypeError(f"synthetic sizes of task {task!r} must be a dataclass type, got {sizes!r}")
    for f in fields(sizes) if sizes is not None else ():
        if f.default is MISSING or type(f.default) not in (int, float):
            raise TypeError(f"synthetic size {f.name!r} of task {task!r} needs an int or float default")
    entry_files = tuple(_check_path(task, f) for f in files)

    def add(fn: SyntheticWriter) -> SyntheticWriter:
        known = _SYNTHETIC.get(task)
        if known is not None and not same_definition(known.write, fn):
            raise ValueError(
                f"synthetic data of task {task!r} is registered twice: by {_where(known.write)} and {_where(fn)}"
            )
        entry = SyntheticTask(task, entry_files, fn, sizes, reads if callable(reads) else tuple(reads))
        names = {f.name for f in entry.options()}
        for other in _SYNTHETIC.values():
            if other.name == task:
                continue
            shared = sorted(set(entry_files) & set(other.files))
            if shared:
                raise ValueError(f"tasks {other.name!r} and {task!r} both write the synthetic file {shared[0]}")
            clash = sorted(names & {f.name for f in other.options()})
            if clash:
                raise ValueError(f"tasks {other.name!r} and {task!r} both declare the synthetic size {clash[0]!r}")
        if known is None or fn.__module__ != "__main__":  # keep the importable copy
            _SYNTHETIC[task] = entry
        return fn

    return add


def offer_questions(task: str, files: Sequence[str]) -> Callable[[QuestionReader], QuestionReader]:
    """Decorator: ``read(out)`` gives task ``task``'s labelled questions, read from its ``files``."""
    offer_files = tuple(_check_path(task, f) for f in files)

    def add(fn: QuestionReader) -> QuestionReader:
        known = _OFFERS.get(task)
        if known is not None and not same_definition(known.read, fn):
            raise ValueError(f"questions of task {task!r} are offered twice: by {_where(known.read)} and {_where(fn)}")
        if known is None or fn.__module__ != "__main__":
            _OFFERS[task] = QuestionOffer(task, offer_files, fn)
        return fn

    return add


def synthetic_tasks() -> list[SyntheticTask]:
    """Every registered task's synthetic data, by name (the task packages are imported first)."""
    discover()
    return [_SYNTHETIC[n] for n in sorted(_SYNTHETIC)]


def question_offers() -> list[QuestionOffer]:
    """Every task's offered questions, by task name."""
    discover()
    return [_OFFERS[n] for n in sorted(_OFFERS)]


def offered_files() -> list[str]:
    """The files every offer reads (a writer that reads offers lists them in its ``reads``)."""
    return [f for offer in question_offers() for f in offer.files]


def read_offers(out: Path) -> dict[str, OfferedQuestions]:
    """Task name -> its offered questions, read from the data root ``out``."""
    return {offer.task: offer.read(Path(out)) for offer in question_offers()}


def plan(tasks: Collection[str] | None = None) -> list[SyntheticTask]:
    """The writers to run, in order: ``tasks`` (None: all) and those whose files they read, each
    after the writers of the files it reads (ties by name)."""
    registered = {t.name: t for t in synthetic_tasks()}
    owner = {f: t.name for t in registered.values() for f in t.files}
    needs: dict[str, set[str]] = {}
    for t in registered.values():
        needs[t.name] = set()
        for f in t.read_files():
            if f not in owner:
                raise ValueError(f"synthetic data of task {t.name!r} reads {f}, which no registered task writes")
            if owner[f] != t.name:
                needs[t.name].add(owner[f])
    wanted = set(registered) if tasks is None else set(tasks)
    unknown = sorted(wanted - set(registered))
    if unknown:
        raise ValueError(f"no synthetic data for task(s) {', '.join(unknown)}; known: {', '.join(sorted(registered))}")
    todo = list(wanted)
    while todo:
        for dep in needs[todo.pop()] - wanted:
            wanted.add(dep)
            todo.append(dep)
    order: list[SyntheticTask] = []
    done: set[str] = set()
    while len(order) < len(wanted):
        ready = sorted(n for n in wanted - done if needs[n] <= done)
        if not ready:
            stuck = sorted(wanted - done)
            raise ValueError(f"synthetic data of tasks {', '.join(stuck)} read each other's files (a cycle)")
        order.append(registered[ready[0]])
        done.add(ready[0])
    return order


def resolve_sizes(config: SyntheticConfig) -> dict[str, Any]:
    """Task name -> its size options (``config.sizes`` over the declared defaults); unknown names,
    negative counts and values a task refuses are errors naming the option."""
    tasks = synthetic_tasks()
    declared = {f.name: (t, f) for t in tasks for f in t.options()}
    unknown = sorted(set(config.sizes) - set(declared))
    if unknown:
        raise ValueError(f"unknown synthetic size(s) {', '.join(unknown)}; known: {', '.join(sorted(declared))}")
    for name, value in config.sizes.items():
        kind = type(declared[name][1].default)
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong or (kind is int and not isinstance(value, int)):
            raise ValueError(f"synthetic size {name} must be {kind.__name__}, got {value!r}")
        if value < 0:
            raise ValueError(f"synthetic size {name} must be >= 0, got {value}")
    resolved: dict[str, Any] = {}
    for t in tasks:
        if t.sizes is not None:
            given = {f.name: config.sizes[f.name] for f in t.options() if f.name in config.sizes}
            try:
                resolved[t.name] = t.sizes(**given)
            except ValueError as err:
                raise ValueError(f"synthetic sizes of task {t.name!r}: {err}") from None
    return resolved


def output_files(out: str | Path, tasks: Collection[str] | None = None) -> list[Path]:
    """Every file ``generate(out, tasks=tasks)`` writes."""
    return [Path(out) / f for t in plan(tasks) for f in t.files]


def generate(
    out: str | Path,
    config: SyntheticConfig | None = None,
    progress: bool = True,
    tasks: Collection[str] | None = None,
) -> dict[str, int]:
    """Write the synthetic data root of ``tasks`` (None: every task; the owners of files they read
    are added); returns counts of images or records per file."""
    cfg = config or SyntheticConfig()
    out = Path(out)
    sizes = resolve_sizes(cfg)
    counts: dict[str, int] = {}
    for task in plan(tasks):
        written = task.write(Generator(cfg, task.name, sizes.get(task.name), progress), out)
        missing = [f for f in task.files if not (out / f).is_file()]
        extra = sorted(set(written) - set(task.files))
        if missing or extra:
            what = f"did not write {missing[0]}" if missing else f"wrote {extra[0]}, which it does not declare"
            raise RuntimeError(f"synthetic writer of task {task.name!r} ({_where(task.write)}) {what}")
        counts.update(written)
    return counts


# ---- command line ---------------------------------------------------------------------------------

SHARED_OPTIONS = tuple(f for f in fields(SyntheticConfig) if f.name != "sizes")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.synthetic",
        description="Write a small synthetic LXMERT data root (original layout and formats) with a learnable "
        "colour/shape signal, for tests and smoke runs: every task's files, or those of --tasks.",
    )
    parser.add_argument("--out", required=True, type=Path, help="data root to create (e.g. data_synth)")
    parser.add_argument("--force", action="store_true", help="overwrite files that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--tasks", default="", help="comma-separated tasks to write (and those whose files "
                        "they read); default: every task")
    shared = parser.add_argument_group("shared by every task")
    for f in SHARED_OPTIONS:
        shared.add_argument(_flag(f.name), type=type(f.default), default=f.default, help=f"(default: {f.default})")
    for task in synthetic_tasks():
        if not task.options():
            continue
        group = parser.add_argument_group(f"sizes of {task.name}")
        for f in task.options():
            text = f.metadata.get("help", "")
            group.add_argument(_flag(f.name), type=type(f.default), default=None, metavar="N",
                               help=f"{text} (default: {f.default})".strip())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = [f.name for t in synthetic_tasks() for f in t.options()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or None
    try:
        config = SyntheticConfig(
            **{f.name: getattr(args, f.name) for f in SHARED_OPTIONS},
            sizes={n: getattr(args, n) for n in options if getattr(args, n) is not None},
        )
        resolve_sizes(config)
        existing = [p for p in output_files(args.out, tasks) if p.exists()]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if existing and not args.force:
        print(
            f"error: {existing[0]} already exists ({len(existing)} files would be overwritten); "
            "pass --force to overwrite, or choose another --out",
            file=sys.stderr,
        )
        return 1
    counts = generate(args.out, config, progress=not args.quiet, tasks=tasks)
    for name, count in counts.items():
        print(f"{args.out / name}: {count}")
    return 0


if __name__ == "__main__":
    # Task modules register into ``tasks.synthetic``; run that module's copy, not ``__main__``'s.
    from tasks.synthetic import main as registered_main

    sys.exit(registered_main())
