"""Synthetic VQA: questions about the dominant colour/shape of COCO images (see ``tasks.synthetic``).

Writes, under the data root, what the original release holds::

    vqa/{train,nominival,minival,test}.json         questions (test without labels)
    vqa/trainval_{ans2label,label2ans}.json         the answer table ("" first, like the real one)
    mscoco_imgfeat/{train2014,val2014,test2015}_obj36.tsv

The COCO feature files are VQA's: other tasks' synthetic data reads them. minival is the first
``minival_images`` images of val2014, nominival the rest. Soft labels are as released: the answer
1.0, sometimes a minority answer 0.3. The table holds one answer no question uses (``EXTRA_ANSWER``),
so that a table built from the questions (the pretraining answers) lacks it, as the real ones do.
VQA offers its labelled questions (``offer_questions``): minival images are held out, test images hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tasks.vqa import VQATask
from tasks.vqa_data import FEATURE_DIR, SPLIT2IMAGES

EXTRA_ANSWER = "striped"  # in the table, in no label: exercises answer-head remapping
ANSWERS = ("", "yes", "no", *COLORS, *SHAPES, EXTRA_ANSWER)
SPLITS = ("train", "nominival", "minival", "test")
IMAGE_SETS = tuple(dict.fromkeys(SPLIT2IMAGES[s] for s in SPLITS))  # train2014, val2014, test2015
FOLDER = VQATask.folder()
FILES = (
    *(f"{FOLDER}/{s}.json" for s in SPLITS),
    f"{FOLDER}/trainval_ans2label.json",
    f"{FOLDER}/trainval_label2ans.json",
    *(f"{FEATURE_DIR}/{s}_obj36.tsv" for s in IMAGE_SETS),
)


@dataclass(frozen=True)
class VQASizes:
    """Numbers of COCO images (questions: ``questions_per_image`` each)."""

    coco_train_images: int = field(default=96, metadata={"help": "COCO train2014 images"})
    coco_val_images: int = field(default=40, metadata={"help": "COCO val2014 images (minival + nominival)"})
    minival_images: int = field(default=16, metadata={"help": "val2014 images of minival"})
    coco_test_images: int = field(default=16, metadata={"help": "COCO test2015 images"})

    def __post_init__(self) -> None:
        if not 0 < self.minival_images <= self.coco_val_images:
            raise ValueError("minival_images must be between 1 and coco_val_images")


def question(gen: Generator, img: Image) -> tuple[str, str, str, str]:
    """(sentence, answer, question_type, answer_type) about the image's dominant attributes."""
    kind = int(gen.rng.integers(4))
    if kind == 0:
        return f"What color is the {img.shape}?", img.color, "what color is the", "other"
    if kind == 1:
        return "What shape is in the image?", img.shape, "what", "other"
    if kind == 2:
        shape = gen.maybe(img.shape, SHAPES)
        return f"Is there a {shape} in the picture?", yes(shape == img.shape), "is there a", "yes/no"
    color = gen.maybe(img.color, COLORS)
    return f"Is the {img.shape} {color}?", yes(color == img.color), "is the", "yes/no"


def soft_label(gen: Generator, answer: str) -> dict[str, float]:
    """The answer 1.0, and a fifth of the time a minority answer of the same kind 0.3."""
    label = {answer: 1.0}
    if gen.rng.random() < 0.2:
        pool = COLORS if answer in COLORS else SHAPES if answer in SHAPES else ("yes", "no")
        label[gen.other(pool, answer)] = 0.3
    return label


def records(gen: Generator, images: Sequence[Image], labelled: bool) -> list[dict[str, Any]]:
    """``questions_per_image`` questions per image; question ids are the COCO number x 1000 + k."""
    out = []
    for img in images:
        number = int(img.img_id.rsplit("_", 1)[1])
        for k in range(gen.cfg.questions_per_image):
            sent, answer, qtype, atype = question(gen, img)
            rec: dict[str, Any] = {"img_id": img.img_id, "question_id": number * 1000 + k, "sent": sent}
            if labelled:
                rec.update(answer_type=atype, label=soft_label(gen, answer), question_type=qtype)
            out.append(rec)
    return out


@register_synthetic(VQATask.name, FILES, sizes=VQASizes)
def synthetic_vqa(gen: Generator, out: Path) -> dict[str, int]:
    """The VQA questions, answer table and COCO features (see the module docstring)."""
    sizes: VQASizes = gen.sizes
    counts = dict(zip(IMAGE_SETS, (sizes.coco_train_images, sizes.coco_val_images, sizes.coco_test_images)))
    coco = {
        image_set: [gen.image(f"COCO_{image_set}_{gen.unique_number(1, 582000):012d}") for _ in range(n)]
        for image_set, n in counts.items()
    }
    val = coco[SPLIT2IMAGES["minival"]]
    images = {
        "train": coco[SPLIT2IMAGES["train"]],
        "nominival": val[sizes.minival_images :],
        "minival": val[: sizes.minival_images],
        "test": coco[SPLIT2IMAGES["test"]],
    }
    written: dict[str, int] = {}
    for split in SPLITS:
        recs = records(gen, images[split], labelled=split != "test")
        write_json(out / FOLDER / f"{split}.json", recs)
        written[f"{FOLDER}/{split}.json"] = len(recs)
    write_json(out / FOLDER / "trainval_ans2label.json", {a: i for i, a in enumerate(ANSWERS)}, indent=4)
    write_json(out / FOLDER / "trainval_label2ans.json", list(ANSWERS))
    for name in ("trainval_ans2label.json", "trainval_label2ans.json"):
        written[f"{FOLDER}/{name}"] = len(ANSWERS)
    for image_set, imgs in coco.items():
        name = f"{FEATURE_DIR}/{image_set}_obj36.tsv"
        written[name] = write_features(out / name, gen, imgs)
    return written


@offer_questions(VQATask.name, tuple(f"{FOLDER}/{s}.json" for s in SPLITS))
def vqa_questions(out: Path) -> OfferedQuestions:
    """The labelled VQA questions; minival images held out, test images hidden."""
    folder = out / FOLDER
    return offered_from(
        [folder / f"{s}.json" for s in ("train", "nominival", "minival")],
        set(ANSWERS) - {""},
        held_out=image_ids(folder / "minival.json"),
        hidden=image_ids(folder / "test.json"),
    )
