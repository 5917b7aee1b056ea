"""Synthetic NLVR2: true/false sentences about pairs of images (see ``tasks.synthetic``).

Writes ``nlvr2/{train,valid,test}.json`` and ``nlvr2_imgfeat/{train,valid,test}_obj36.tsv`` as the
original's files. As in the release, each set has 4 image pairs, each described by the set's 2
sentences (identifiers ``<split>-<set>-<pair>-<sentence>``); each label is drawn 50/50, and the
sentences state facts about the left, the right or both images' dominant colour or shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.nlvr2 import NLVR2Task
from tasks.nlvr2_data import FEATURE_DIR, nlvr2_feature_file
from tasks.synthetic import COLORS, SHAPES, Generator, Image, register_synthetic, write_features, write_json

SPLITS = (("train", "train"), ("valid", "dev"), ("test", "test1"))  # split, identifier prefix
TEMPLATES = (
    "Both images contain a {} object.",
    "The left image shows a {}.",
    "The right image contains a {} object.",
)
FOLDER = NLVR2Task.folder()
FILES = (
    *(f"{FOLDER}/{s}.json" for s, _ in SPLITS),
    *(f"{FEATURE_DIR}/{nlvr2_feature_file(s)}" for s, _ in SPLITS),
)


@dataclass(frozen=True)
class NLVR2Sizes:
    """Sets (4 image pairs x 2 sentences each) per split."""

    nlvr2_train_sets: int = field(default=128, metadata={"help": "training sets"})
    nlvr2_valid_sets: int = field(default=24, metadata={"help": "validation sets"})
    nlvr2_test_sets: int = field(default=12, metadata={"help": "test sets"})


def truth(kind: int, value: str, img0: Image, img1: Image) -> int:
    """Whether sentence ``TEMPLATES[kind]`` with ``value`` holds for the pair."""
    if kind == 0:
        return int(img0.color == value and img1.color == value)
    if kind == 1:
        return int(img0.shape == value)
    return int(img1.color == value)


def pair(gen: Generator, sentences: Sequence[tuple[int, str]]) -> tuple[Image, Image, list[int]]:
    """Two images and the truth value of each sentence about them, each label drawn 50/50.

    Images are drawn until the wanted labels hold; a combination that cannot hold (e.g. "both
    images are red" and "both images are blue") gets its later labels redrawn.
    """
    wanted = [int(gen.rng.integers(2)) for _ in sentences]
    for attempt in range(4000):
        if attempt and attempt % 1000 == 0:
            wanted = [wanted[0]] + [int(gen.rng.integers(2)) for _ in sentences[1:]]
        img0, img1 = gen.image(""), gen.image("")
        labels = [truth(k, v, img0, img1) for k, v in sentences]
        if labels == wanted:
            return img0, img1, labels
    return img0, img1, labels  # unreachable for the templates above; keeps whatever was drawn


def split_records(gen: Generator, split: str, prefix: str, sets: int) -> tuple[list[dict[str, Any]], list[Image]]:
    """The records and images (two per pair, in order) of ``sets`` sets."""
    records: list[dict[str, Any]] = []
    images: list[Image] = []
    for _ in range(sets):
        set_id = gen.unique_number(0, 100000)
        sentences: list[tuple[int, str]] = []
        while len(sentences) < 2:
            kind = int(gen.rng.integers(len(TEMPLATES)))
            values = SHAPES if kind == 1 else COLORS
            sentence = (kind, values[gen.rng.integers(len(values))])
            if sentence not in sentences:
                sentences.append(sentence)
        for number in range(4):
            base = f"{prefix}-{set_id}-{number}"
            img0, img1, labels = pair(gen, sentences)
            images += [Image(f"{base}-img0", img0.color, img0.shape), Image(f"{base}-img1", img1.color, img1.shape)]
            for index, ((kind, value), label) in enumerate(zip(sentences, labels)):
                records.append(
                    {
                        "identifier": f"{base}-{index}",
                        "img0": f"{base}-img0",
                        "img1": f"{base}-img1",
                        "label": label,
                        "sent": TEMPLATES[kind].format(value),
                        "uid": f"{NLVR2Task.name}_{split}_{len(records)}",
                    }
                )
    return records, images


@register_synthetic(NLVR2Task.name, FILES, sizes=NLVR2Sizes)
def synthetic_nlvr2(gen: Generator, out: Path) -> dict[str, int]:
    """The NLVR2 sentences and image-pair features (see the module docstring)."""
    sizes: NLVR2Sizes = gen.sizes
    sets = {"train": sizes.nlvr2_train_sets, "valid": sizes.nlvr2_valid_sets, "test": sizes.nlvr2_test_sets}
    drawn = {split: split_records(gen, split, prefix, sets[split]) for split, prefix in SPLITS}
    written: dict[str, int] = {}
    for split, (records, _) in drawn.items():
        write_json(out / FOLDER / f"{split}.json", records)
        written[f"{FOLDER}/{split}.json"] = len(records)
    for split, (_, images) in drawn.items():
        name = f"{FEATURE_DIR}/{nlvr2_feature_file(split)}"
        written[name] = write_features(out / name, gen, images)
    return written
