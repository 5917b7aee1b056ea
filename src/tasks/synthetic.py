"""A small synthetic data root in the original file layout and formats, with a learnable signal.

Every image has a dominant colour and shape. Most of its regions show that colour/shape pair (the
rest show random ones); a region's feature is ``relu(P_colour + P_shape + noise)`` for fixed random
prototypes, its ``attrs_id`` is the colour index and its ``objects_id`` the shape index (below 6 and
5, so small test models with few object/attribute classes can predict them). Questions
ask about the dominant colour or shape in words of the real BERT vocabulary and are answered with
the truth; NLVR2 sentences state facts about the left/right/both images; captions describe the
image. A model that reads both the question and the regions can therefore learn every task.

Layout written under ``--out`` (the names the task code reads)::

    mscoco_imgfeat/{train2014,val2014,test2015}_obj36.tsv      vqa/{train,nominival,minival,test}.json
    vg_gqa_imgfeat/{vg_gqa,gqa_testdev}_obj36.tsv              gqa/{train,valid,testdev,submit}.json
    nlvr2_imgfeat/{train,valid,test}_obj36.tsv                 nlvr2/{train,valid,test}.json
    lxmert/{mscoco_train,mscoco_nominival,mscoco_minival,vgnococo}.json + all_ans.json
    vqa/trainval_{ans2label,label2ans}.json, gqa/trainval_{ans2label,label2ans}.json

Other tasks add their files with ``@register_synthetic(name, files)`` (found by importing the
``tasks`` package): each gets its own ``Generator`` whose random stream depends only on the seed and
the task's name, so adding or removing a task changes no other task's files. The VQA, GQA, NLVR2
and pretraining files above are one stream of their own, drawn in a fixed order.

Run ``python -m tasks.synthetic --out data_synth`` (``--help`` lists every size).
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.plugins import discover
from features.tsv import RegionRecord, write_tsv
from lxrt.fileio import atomic_write_text

COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "white", "black")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
VQA_EXTRA_ANSWER = "striped"  # in the VQA table, absent from all_ans.json: exercises answer-head remapping
GQA_UNKNOWN_ANSWERS = ("purple", "polka dot")  # GQA labels outside the GQA table (skipped, as in the original)
VISUAL7W_ANSWER = "daytime"  # a pretraining-only answer


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and noise of the generated data (defaults: a few hundred questions per task)."""

    seed: int = 0
    feat_dim: int = 64
    num_boxes: int = 36
    coco_train_images: int = 96
    coco_val_images: int = 40
    minival_images: int = 16
    coco_test_images: int = 16
    vg_images: int = 96
    gqa_valid_images: int = 24
    gqa_submit_images: int = 8
    gqa_testdev_images: int = 24
    nlvr2_train_sets: int = 128
    nlvr2_valid_sets: int = 24
    nlvr2_test_sets: int = 12
    questions_per_image: int = 3
    captions_per_image: int = 2
    dominant_fraction: float = 0.6
    noise: float = 0.5
    gqa_unknown_answer_rate: float = 0.03
    task_images: int = 96  # training images of each registered task (valid: a quarter, test: an eighth)

    def __post_init__(self) -> None:
        if self.feat_dim < 1 or self.num_boxes < 1:
            raise ValueError("feat_dim and num_boxes must be >= 1")
        if not 0 < self.minival_images <= self.coco_val_images:
            raise ValueError("minival_images must be between 1 and coco_val_images")
        if not 0 < self.gqa_valid_images < self.vg_images:
            raise ValueError("gqa_valid_images must be between 1 and vg_images - 1")
        if not 0.0 <= self.dominant_fraction <= 1.0 or not 0.0 <= self.gqa_unknown_answer_rate < 1.0:
            raise ValueError("dominant_fraction and gqa_unknown_answer_rate must be fractions")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")


@dataclass(frozen=True)
class Image:
    """One synthetic image: its id and dominant attributes."""

    img_id: str
    color: str
    shape: str


class Generator:
    """Deterministic (for a seed) builder of images, region records and task records.

    ``stream`` names an independent random stream (a registered task's name); None is the stream of
    the original-layout files.
    """

    def __init__(self, config: SyntheticConfig, stream: str | None = None) -> None:
        self.cfg = config
        seed = config.seed if stream is None else [config.seed, zlib.crc32(stream.encode("utf-8"))]
        self.rng = np.random.default_rng(seed)
        self.color_protos = self.rng.normal(0.0, 1.0, (len(COLORS), config.feat_dim)).astype(np.float32)
        self.shape_protos = self.rng.normal(0.0, 1.0, (len(SHAPES), config.feat_dim)).astype(np.float32)
        self._used_numbers: set[int] = set()

    # ---- images -------------------------------------------------------------------------------

    def unique_number(self, low: int, high: int) -> int:
        while True:
            n = int(self.rng.integers(low, high))
            if n not in self._used_numbers:
                self._used_numbers.add(n)
                return n

    def image(self, img_id: str, color: str | None = None, shape: str | None = None) -> Image:
        color = color if color is not None else COLORS[self.rng.integers(len(COLORS))]
        shape = shape if shape is not None else SHAPES[self.rng.integers(len(SHAPES))]
        return Image(img_id, color, shape)

    def record(self, img: Image) -> RegionRecord:
        """The image's regions: mostly the dominant colour/shape, the rest random."""
        cfg, rng, n = self.cfg, self.rng, self.cfg.num_boxes
        dominant = rng.random(n) < cfg.dominant_fraction
        dominant[0] = True  # at least one region shows the dominant pair
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

    def coco_images(self, image_set: str, count: int) -> list[Image]:
        return [self.image(f"COCO_{image_set}_{self.unique_number(1, 582000):012d}") for _ in range(count)]

    # ---- questions ------------------------------------------------------------------------------

    def other(self, values: Sequence[str], not_this: str) -> str:
        choices = [v for v in values if v != not_this]
        return choices[self.rng.integers(len(choices))]

    def maybe(self, value: str, values: Sequence[str]) -> str:
        """``value`` half of the time, another of ``values`` otherwise (balanced yes/no questions)."""
        return value if self.rng.random() < 0.5 else self.other(values, value)

    def vqa_question(self, img: Image) -> tuple[str, str, str, str]:
        """(sentence, answer, question_type, answer_type) about the image's dominant attributes."""
        kind = int(self.rng.integers(4))
        if kind == 0:
            return f"What color is the {img.shape}?", img.color, "what color is the", "other"
        if kind == 1:
            return "What shape is in the image?", img.shape, "what", "other"
        if kind == 2:
            shape = self.maybe(img.shape, SHAPES)
            return f"Is there a {shape} in the picture?", _yes(shape == img.shape), "is there a", "yes/no"
        color = self.maybe(img.color, COLORS)
        return f"Is the {img.shape} {color}?", _yes(color == img.color), "is the", "yes/no"

    def gqa_question(self, img: Image) -> tuple[str, str]:
        kind = int(self.rng.integers(4))
        if kind == 0:
            return f"What is the color of the {img.shape}?", img.color
        if kind == 1:
            return f"What shape is the {img.color} object?", img.shape
        if kind == 2:
            color = self.maybe(img.color, COLORS)
            return f"Is the {img.shape} {color}?", _yes(color == img.color)
        shape = self.maybe(img.shape, SHAPES)
        return f"Is there a {shape} in this image?", _yes(shape == img.shape)

    def caption(self, img: Image) -> str:
        templates = (
            "A {c} {s} in the picture.",
            "There is a {c} {s} in the image.",
            "A photo of a {c} {s}.",
            "Some {c} objects and a large {s}.",
        )
        return templates[self.rng.integers(len(templates))].format(c=img.color, s=img.shape)

    def vqa_label(self, answer: str) -> dict[str, float]:
        """Soft scores as in the released files: the answer 1.0, sometimes a minority answer 0.3."""
        label = {answer: 1.0}
        if self.rng.random() < 0.2:
            pool = COLORS if answer in COLORS else SHAPES if answer in SHAPES else ("yes", "no")
            label[self.other(pool, answer)] = 0.3
        return label

    def vqa_records(self, images: Sequence[Image], labelled: bool) -> list[dict[str, Any]]:
        out = []
        for img in images:
            number = int(img.img_id.rsplit("_", 1)[1])
            for k in range(self.cfg.questions_per_image):
                sent, answer, qtype, atype = self.vqa_question(img)
                rec: dict[str, Any] = {"img_id": img.img_id, "question_id": number * 1000 + k, "sent": sent}
                if labelled:
                    rec.update(answer_type=atype, label=self.vqa_label(answer), question_type=qtype)
                out.append(rec)
        return out

    def gqa_records(self, images: Sequence[Image], labelled: bool) -> list[dict[str, Any]]:
        out = []
        for img in images:
            for _ in range(self.cfg.questions_per_image):
                sent, answer = self.gqa_question(img)
                rec: dict[str, Any] = {"img_id": img.img_id, "question_id": f"{self.unique_number(10**7, 10**9):09d}"}
                rec["sent"] = sent
                if labelled:
                    if self.rng.random() < self.cfg.gqa_unknown_answer_rate:
                        answer = GQA_UNKNOWN_ANSWERS[self.rng.integers(len(GQA_UNKNOWN_ANSWERS))]
                    rec["label"] = {answer: 1.0}
                out.append(rec)
        return out

    # ---- NLVR2 ----------------------------------------------------------------------------------

    @staticmethod
    def nlvr2_truth(kind: int, value: str, img0: Image, img1: Image) -> int:
        if kind == 0:  # "Both images contain a <colour> object."
            return int(img0.color == value and img1.color == value)
        if kind == 1:  # "The left image shows a <shape>."
            return int(img0.shape == value)
        return int(img1.color == value)  # "The right image contains a <colour> object."

    def nlvr2_pair(self, sentences: Sequence[tuple[int, str]]) -> tuple[Image, Image, list[int]]:
        """Two images and the truth value of each sentence about them, each label drawn 50/50.

        Images are drawn until the wanted labels hold; a combination that cannot hold (e.g. "both
        images are red" and "both images are blue") gets its later labels redrawn.
        """
        wanted = [int(self.rng.integers(2)) for _ in sentences]
        for attempt in range(4000):
            if attempt and attempt % 1000 == 0:
                wanted = [wanted[0]] + [int(self.rng.integers(2)) for _ in sentences[1:]]
            img0, img1 = self.image(""), self.image("")
            labels = [self.nlvr2_truth(k, v, img0, img1) for k, v in sentences]
            if labels == wanted:
                return img0, img1, labels
        return img0, img1, labels  # unreachable for the templates above; keeps whatever was drawn

    def nlvr2_split(self, split: str, prefix: str, sets: int) -> tuple[list[dict[str, Any]], list[Image]]:
        """Each set: 4 image pairs, each described by the set's 2 sentences (ids split-set-pair-sentence)."""
        records: list[dict[str, Any]] = []
        images: list[Image] = []
        templates = (
            "Both images contain a {} object.",
            "The left image shows a {}.",
            "The right image contains a {} object.",
        )
        for _ in range(sets):
            set_id = self.unique_number(0, 100000)
            sentences: list[tuple[int, str]] = []
            while len(sentences) < 2:
                kind = int(self.rng.integers(len(templates)))
                values = SHAPES if kind == 1 else COLORS
                sentence = (kind, values[self.rng.integers(len(values))])
                if sentence not in sentences:
                    sentences.append(sentence)
            for pair in range(4):
                base = f"{prefix}-{set_id}-{pair}"
                img0, img1, labels = self.nlvr2_pair(sentences)
                images += [Image(f"{base}-img0", img0.color, img0.shape), Image(f"{base}-img1", img1.color, img1.shape)]
                for sentence, ((kind, value), label) in enumerate(zip(sentences, labels)):
                    records.append(
                        {
                            "identifier": f"{base}-{sentence}",
                            "img0": f"{base}-img0",
                            "img1": f"{base}-img1",
                            "label": label,
                            "sent": templates[kind].format(value),
                            "uid": f"nlvr2_{split}_{len(records)}",
                        }
                    )
        return records, images

    # ---- pretraining ----------------------------------------------------------------------------

    def lxmert_entry(
        self, img: Image, qa: dict[str, list[tuple[str, dict[str, float]]]], caption_source: str
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"img_id": img.img_id, "labelf": {}, "sentf": {}}
        entry["sentf"][caption_source] = [self.caption(img) for _ in range(self.cfg.captions_per_image)]
        for source, pairs in qa.items():
            entry["sentf"][source] = [s for s, _ in pairs]
            entry["labelf"][source] = [lab for _, lab in pairs]
        return entry


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def answer_tables(seed: int) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """VQA label2ans ("" first, like the real table), GQA label2ans and all_ans.json entries."""
    rng = np.random.default_rng(seed + 1)
    vqa = ["", "yes", "no", *COLORS, *SHAPES, VQA_EXTRA_ANSWER]
    gqa = ["no", "yes", *SHAPES, *COLORS]
    entries = [{"ans": c, "dsets": ["vqa", "gqa", "visual7w"]} for c in COLORS]
    entries += [{"ans": s, "dsets": ["vqa", "gqa"]} for s in SHAPES]
    entries += [{"ans": a, "dsets": ["vqa", "gqa"]} for a in ("yes", "no")]
    entries += [{"ans": VISUAL7W_ANSWER, "dsets": ["visual7w"]}]
    order = rng.permutation(len(entries))  # the pretraining ids differ from the task labels
    return vqa, gqa, [entries[i] for i in order]


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """``data`` as JSON at ``path`` (folders created, written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=indent))


def write_features(path: Path, gen: Generator, images: Sequence[Image], bar: tqdm | None = None) -> None:
    """The obj36 TSV of ``images`` (region records drawn from ``gen``, in order)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def records() -> Iterator[RegionRecord]:
        for img in images:
            yield gen.record(img)
            if bar is not None:
                bar.update(1)

    write_tsv(path, records())



SyntheticWriter = Callable[[Generator, Path], dict[str, int]]
"""``write(gen, out)``: write a task's files under the data root ``out``; returns counts per file."""


@dataclass(frozen=True)
class SyntheticTask:
    """A registered task's synthetic data: the files it writes (relative to the root) and how."""

    name: str
    files: tuple[str, ...]
    write: SyntheticWriter


_SYNTHETIC: dict[str, SyntheticTask] = {}


def register_synthetic(name: str, files: Sequence[str]) -> Callable[[SyntheticWriter], SyntheticWriter]:
    """Decorator: ``write(gen, out)`` adds ``files`` to every synthetic root, drawn from ``Generator(cfg,
    stream=name)``."""

    def add(fn: SyntheticWriter) -> SyntheticWriter:
        if name in _SYNTHETIC and _SYNTHETIC[name].write is not fn:
            raise ValueError(f"synthetic data for {name!r} is already registered")
        _SYNTHETIC[name] = SyntheticTask(name, tuple(files), fn)
        return fn

    return add


def synthetic_tasks() -> list[SyntheticTask]:
    """Every registered task's synthetic data, by name (task modules are imported first)."""
    discover(("tasks",))
    return [_SYNTHETIC[n] for n in sorted(_SYNTHETIC)]


def output_files(out: Path) -> list[Path]:
    """Every file ``generate`` writes (relative layout of the original data root)."""
    names = [
        *(f"mscoco_imgfeat/{s}_obj36.tsv" for s in ("train2014", "val2014", "test2015")),
        *(f"vg_gqa_imgfeat/{s}_obj36.tsv" for s in ("vg_gqa", "gqa_testdev")),
        *(f"nlvr2_imgfeat/{s}_obj36.tsv" for s in ("train", "valid", "test")),
        *(f"vqa/{s}.json" for s in ("train", "nominival", "minival", "test")),
        *(f"gqa/{s}.json" for s in ("train", "valid", "testdev", "submit")),
        *(f"nlvr2/{s}.json" for s in ("train", "valid", "test")),
        *(f"lxmert/{s}.json" for s in ("mscoco_train", "mscoco_nominival", "mscoco_minival", "vgnococo")),
        "lxmert/all_ans.json",
        *(f"{t}/trainval_{k}.json" for t in ("vqa", "gqa") for k in ("ans2label", "label2ans")),
    ]
    names += [f for task in synthetic_tasks() for f in task.files]
    return [out / n for n in names]


def generate(out: str | Path, config: SyntheticConfig | None = None, progress: bool = True) -> dict[str, int]:
    """Write the synthetic data root; returns counts of images and records per file."""
    cfg = config or SyntheticConfig()
    out = Path(out)
    gen = Generator(cfg)
    counts: dict[str, int] = {}

    coco = {
        "train2014": gen.coco_images("train2014", cfg.coco_train_images),
        "val2014": gen.coco_images("val2014", cfg.coco_val_images),
        "test2015": gen.coco_images("test2015", cfg.coco_test_images),
    }
    minival, nominival = coco["val2014"][: cfg.minival_images], coco["val2014"][cfg.minival_images :]
    vg = [gen.image(str(gen.unique_number(1, 2420000))) for _ in range(cfg.vg_images)]
    gqa_test = [gen.image(f"n{gen.unique_number(1, 600000)}") for _ in range(cfg.gqa_submit_images)]
    testdev = [gen.image(f"n{gen.unique_number(1, 600000)}") for _ in range(cfg.gqa_testdev_images)]
    nlvr2 = {
        split: gen.nlvr2_split(split, prefix, sets)
        for split, prefix, sets in (
            ("train", "train", cfg.nlvr2_train_sets),
            ("valid", "dev", cfg.nlvr2_valid_sets),
            ("test", "test1", cfg.nlvr2_test_sets),
        )
    }

    vqa = {
        "train": gen.vqa_records(coco["train2014"], labelled=True),
        "nominival": gen.vqa_records(nominival, labelled=True),
        "minival": gen.vqa_records(minival, labelled=True),
        "test": gen.vqa_records(coco["test2015"], labelled=False),
    }
    gqa_train, gqa_valid = vg[cfg.gqa_valid_images :], vg[: cfg.gqa_valid_images]
    gqa = {
        "train": gen.gqa_records(gqa_train, labelled=True),
        "valid": gen.gqa_records(gqa_valid, labelled=True),
        "testdev": gen.gqa_records(testdev, labelled=True),
        "submit": gen.gqa_records(gqa_test, labelled=False),
    }
    for split, records in vqa.items():
        write_json(out / "vqa" / f"{split}.json", records)
        counts[f"vqa/{split}.json"] = len(records)
    for split, records in gqa.items():
        write_json(out / "gqa" / f"{split}.json", records)
        counts[f"gqa/{split}.json"] = len(records)
    for split, (records, _) in nlvr2.items():
        write_json(out / "nlvr2" / f"{split}.json", records)
        counts[f"nlvr2/{split}.json"] = len(records)

    # Pretraining: one entry per image with its captions and its questions from the task files.
    by_image: dict[str, dict[str, list[tuple[str, dict[str, float]]]]] = {}
    for split in ("train", "nominival", "minival"):
        for rec in vqa[split]:
            by_image.setdefault(rec["img_id"], {}).setdefault("vqa", []).append((rec["sent"], rec["label"]))
    for rec in gqa["train"] + gqa["valid"]:
        by_image.setdefault(rec["img_id"], {}).setdefault("gqa", []).append((rec["sent"], rec["label"]))
    lxmert = {
        "mscoco_train": [gen.lxmert_entry(i, by_image.get(i.img_id, {}), "mscoco") for i in coco["train2014"]],
        "mscoco_nominival": [gen.lxmert_entry(i, by_image.get(i.img_id, {}), "mscoco") for i in nominival],
        "mscoco_minival": [gen.lxmert_entry(i, by_image.get(i.img_id, {}), "mscoco") for i in minival],
        "vgnococo": [],
    }
    for img in vg:
        qa = dict(by_image.get(img.img_id, {}))
        qa["visual7w"] = [(f"What color is the {img.shape}?", {img.color: 1.0})]
        if gen.rng.random() < 0.5:
            qa["visual7w"].append(("When was this picture taken?", {VISUAL7W_ANSWER: 1.0}))
        lxmert["vgnococo"].append(gen.lxmert_entry(img, qa, "vg"))
    for name, entries in lxmert.items():
        write_json(out / "lxmert" / f"{name}.json", entries)
        counts[f"lxmert/{name}.json"] = len(entries)

    vqa_answers, gqa_answers, all_ans = answer_tables(cfg.seed)
    for task, answers in (("vqa", vqa_answers), ("gqa", gqa_answers)):
        write_json(out / task / "trainval_ans2label.json", {a: i for i, a in enumerate(answers)}, indent=4)
        write_json(out / task / "trainval_label2ans.json", answers)
    write_json(out / "lxmert" / "all_ans.json", all_ans, indent=4)

    tsvs = {
        "mscoco_imgfeat/train2014_obj36.tsv": coco["train2014"],
        "mscoco_imgfeat/val2014_obj36.tsv": coco["val2014"],
        "mscoco_imgfeat/test2015_obj36.tsv": coco["test2015"],
        "vg_gqa_imgfeat/vg_gqa_obj36.tsv": vg + gqa_test,
        "vg_gqa_imgfeat/gqa_testdev_obj36.tsv": testdev,
        **{f"nlvr2_imgfeat/{split}_obj36.tsv": images for split, (_, images) in nlvr2.items()},
    }
    total = sum(len(v) for v in tsvs.values())
    with tqdm(total=total, desc="synthetic features", unit="img", disable=not progress) as bar:
        for name, images in tsvs.items():
            write_features(out / name, gen, images, bar)
            counts[name] = len(images)
    for task in synthetic_tasks():
        counts.update(task.write(Generator(cfg, stream=task.name), out))
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.synthetic",
        description="Write a small synthetic LXMERT data root (original layout and formats) with a learnable "
        "colour/shape signal, for tests and smoke runs.",
    )
    parser.add_argument("--out", required=True, type=Path, help="data root to create (e.g. data_synth)")
    parser.add_argument("--force", action="store_true", help="overwrite files that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = SyntheticConfig()
    for f in fields(SyntheticConfig):
        value = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(value), default=value, help=f"(default: {value})"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = SyntheticConfig(**{f.name: getattr(args, f.name) for f in fields(SyntheticConfig)})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    existing = [p for p in output_files(args.out) if p.exists()]
    if existing and not args.force:
        print(
            f"error: {existing[0]} already exists ({len(existing)} files would be overwritten); "
            "pass --force to overwrite, or choose another --out",
            file=sys.stderr,
        )
        return 1
    counts = generate(args.out, config, progress=not args.quiet)
    for name, count in counts.items():
        print(f"{args.out / name}: {count}")
    return 0


if __name__ == "__main__":
    # Task modules register into ``tasks.synthetic``; run that module's copy, not ``__main__``'s.
    from tasks.synthetic import main as registered_main

    sys.exit(registered_main())
