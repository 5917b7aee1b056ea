"""Synthetic GQA: questions about the dominant colour/shape of Visual Genome images (see ``tasks.synthetic``).

Writes, under the data root, what the original release holds::

    gqa/{train,valid,testdev,submit}.json        questions (submit without labels)
    gqa/trainval_{ans2label,label2ans}.json      the answer table
    vg_gqa_imgfeat/vg_gqa_obj36.tsv              VG images (train, valid) and GQA test images (submit)
    vg_gqa_imgfeat/gqa_testdev_obj36.tsv         testdev images

The Visual Genome feature files are GQA's: other tasks' synthetic data reads them. A small share of
labels (``gqa_unknown_answer_rate``) are answers outside the table, which the original skips. GQA
offers its labelled train/valid questions (``offer_questions``); testdev and submit images are hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.gqa import GQATask
from tasks.gqa_data import FEATURE_DIR, TESTDEV_FEATURES, VG_GQA_FEATURES
from tasks.synthetic import (
    COLORS,
    SHAPES,
    Generator,
    Image,
    OfferedQuestions,
    image_ids,
    offer_questions,
    offered_from,
    register_synthetic,
    write_features,
    write_json,
    yes,
)

ANSWERS = ("no", "yes", *SHAPES, *COLORS)
UNKNOWN_ANSWERS = ("purple", "polka dot")  # labels outside the table (skipped, as in the original)
SPLITS = ("train", "valid", "testdev", "submit")
FOLDER = GQATask.folder()
FILES = (
    *(f"{FOLDER}/{s}.json" for s in SPLITS),
    f"{FOLDER}/trainval_ans2label.json",
    f"{FOLDER}/trainval_label2ans.json",
    f"{FEATURE_DIR}/{VG_GQA_FEATURES}",
    f"{FEATURE_DIR}/{TESTDEV_FEATURES}",
)


@dataclass(frozen=True)
class GQASizes:
    """Numbers of images (questions: ``questions_per_image`` each) and the unknown-answer rate."""

    vg_images: int = field(default=96, metadata={"help": "Visual Genome images (GQA train + valid)"})
    gqa_valid_images: int = field(default=24, metadata={"help": "VG images of GQA valid"})
    gqa_submit_images: int = field(default=8, metadata={"help": "GQA test images (submit)"})
    gqa_testdev_images: int = field(default=24, metadata={"help": "GQA testdev images"})
    gqa_unknown_answer_rate: float = field(default=0.03, metadata={"help": "share of labels outside the table"})

    def __post_init__(self) -> None:
        if not 0 < self.gqa_valid_images < self.vg_images:
            raise ValueError("gqa_valid_images must be between 1 and vg_images - 1")
        if not 0.0 <= self.gqa_unknown_answer_rate < 1.0:
            raise ValueError("gqa_unknown_answer_rate must be a fraction below 1")


def question(gen: Generator, img: Image) -> tuple[str, str]:
    """(sentence, answer) about the image's dominant attributes."""
    kind = int(gen.rng.integers(4))
    if kind == 0:
        return f"What is the color of the {img.shape}?", img.color
    if kind == 1:
        return f"What shape is the {img.color} object?", img.shape
    if kind == 2:
        color = gen.maybe(img.color, COLORS)
        return f"Is the {img.shape} {color}?", yes(color == img.color)
    shape = gen.maybe(img.shape, SHAPES)
    return f"Is there a {shape} in this image?", yes(shape == img.shape)


def records(gen: Generator, images: Sequence[Image], labelled: bool) -> list[dict[str, Any]]:
    """``questions_per_image`` questions per image with 9-digit string ids."""
    unknown_rate = gen.sizes.gqa_unknown_answer_rate
    out = []
    for img in images:
        for _ in range(gen.cfg.questions_per_image):
            sent, answer = question(gen, img)
            rec: dict[str, Any] = {"img_id": img.img_id, "question_id": f"{gen.unique_number(10**7, 10**9):09d}"}
            rec["sent"] = sent
            if labelled:
                if gen.rng.random() < unknown_rate:
                    answer = UNKNOWN_ANSWERS[gen.rng.integers(len(UNKNOWN_ANSWERS))]
                rec["label"] = {answer: 1.0}
            out.append(rec)
    return out


@register_synthetic(GQATask.name, FILES, sizes=GQASizes)
def synthetic_gqa(gen: Generator, out: Path) -> dict[str, int]:
    """The GQA questions, answer table and Visual Genome / GQA features (see the module docstring)."""
    sizes: GQASizes = gen.sizes
    vg = [gen.image(str(gen.unique_number(1, 2420000))) for _ in range(sizes.vg_images)]
    submit = [gen.image(f"n{gen.unique_number(1, 600000)}") for _ in range(sizes.gqa_submit_images)]
    testdev = [gen.image(f"n{gen.unique_number(1, 600000)}") for _ in range(sizes.gqa_testdev_images)]
    images = {
        "train": vg[sizes.gqa_valid_images :],
        "valid": vg[: sizes.gqa_valid_images],
        "testdev": testdev,
        "submit": submit,
    }
    written: dict[str, int] = {}
    for split in SPLITS:
        recs = records(gen, images[split], labelled=split != "submit")
        write_json(out / FOLDER / f"{split}.json", recs)
        written[f"{FOLDER}/{split}.json"] = len(recs)
    write_json(out / FOLDER / "trainval_ans2label.json", {a: i for i, a in enumerate(ANSWERS)}, indent=4)
    write_json(out / FOLDER / "trainval_label2ans.json", list(ANSWERS))
    for name in ("trainval_ans2label.json", "trainval_label2ans.json"):
        written[f"{FOLDER}/{name}"] = len(ANSWERS)
    for name, imgs in ((VG_GQA_FEATURES, vg + submit), (TESTDEV_FEATURES, testdev)):
        written[f"{FEATURE_DIR}/{name}"] = write_features(out / FEATURE_DIR / name, gen, imgs)
    return written


@offer_questions(GQATask.name, tuple(f"{FOLDER}/{s}.json" for s in SPLITS))
def gqa_questions(out: Path) -> OfferedQuestions:
    """The labelled GQA train/valid questions; testdev and submit images hidden."""
    folder = out / FOLDER
    return offered_from(
        [folder / "train.json", folder / "valid.json"],
        ANSWERS,
        hidden=image_ids(folder / "testdev.json") | image_ids(folder / "submit.json"),
    )
