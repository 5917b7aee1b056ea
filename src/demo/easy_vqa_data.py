"""easy-VQA (the ``easy-vqa`` package) as a VQA task in the original file formats.

``prepare_easy_vqa()`` extracts region features of the 4,000 train and 1,000 test images (64x64
PNGs, one coloured shape each) into feature stores and writes, under ``root``:

    train.json, minival.json, test.json   lists of {"answer_type", "img_id", "label": {answer: 1.0},
                                          "question_id", "question_type", "sent"} as data/vqa/*.json
    trainval_ans2label.json               {answer: index} over the 13 answers
    trainval_label2ans.json               [answer, ...]
    train_<extractor>.store, test_<extractor>.store   feature stores (minival images are in train's)
    manifest.json                         the settings and file names; written last

``minival`` holds the questions of a seeded random ``minival_fraction`` of the train images, which
``train.json`` then leaves out. Image ids are ``train_<n>`` / ``test_<n>`` so they are unique across
splits. ``question_type`` is ``color``, ``shape``, ``yes/no color`` or ``yes/no shape`` (what the
question asks about) and ``answer_type`` is ``yes/no`` or ``other``, as in VQA. Rerunning with the
same settings reuses everything; changed settings rebuild what they affect.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.extraction import extract_folder
from features.store import FeatureStore, StoreError
from lxrt.fileio import atomic_write_text

SPLITS = ("train", "test")
QUESTION_ID_BASE = {"train": 1_000_000, "test": 2_000_000}
SHAPES = ("circle", "rectangle", "triangle")
YES_NO = ("yes", "no")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EasyVQAData:
    """Where a prepared copy of easy-VQA lives: JSON per split and the store each split reads."""

    root: Path
    splits: dict[str, Path]
    stores: dict[str, Path]
    ans2label: Path
    label2ans: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def load(self, split: str) -> list[dict[str, Any]]:
        """The question records of ``split`` (train, minival or test)."""
        return json.loads(self.splits[split].read_text(encoding="utf-8"))


def _package() -> Any:
    try:
        import easy_vqa
    except ImportError as err:
        raise ImportError("the easy-VQA data comes with the 'easy-vqa' package: pip install easy-vqa") from err
    return easy_vqa


def package_dir() -> Path:
    """The folder of the installed ``easy_vqa`` package (it ships the images and questions)."""
    return Path(_package().__file__).resolve().parent


def image_path(img_id: str) -> Path:
    """The PNG of an image id such as ``train_12`` or ``test_7``."""
    split, _, number = img_id.partition("_")
    if split not in SPLITS or not number.isdigit():
        raise ValueError(f"{img_id!r} is not an easy-VQA image id (expected train_<n> or test_<n>)")
    return package_dir() / "data" / split / "images" / f"{int(number)}.png"


def question_type(sent: str, answer: str) -> str:
    """What the question asks about: ``color``, ``shape``, ``yes/no color`` or ``yes/no shape``."""
    if answer in YES_NO:
        words = set(re.findall(r"[a-z]+", sent.lower()))
        return "yes/no shape" if words & set(SHAPES) else "yes/no color"
    return "shape" if answer in SHAPES else "color"


def read_split(split: str) -> tuple[list[tuple[str, str, int]], dict[int, Path]]:
    """(sentence, answer, image number) triples and image number -> path, checked against each other."""
    data = package_dir() / "data" / split
    questions_file = data / "questions.json"
    raw = json.loads(questions_file.read_text(encoding="utf-8"))
    images = {int(p.stem): p for p in (data / "images").glob("*.png") if p.stem.isdigit()}
    answers = set(_package().get_answers())
    questions = []
    for k, record in enumerate(raw):
        ok = (
            isinstance(record, list)
            and len(record) == 3
            and isinstance(record[0], str)
            and isinstance(record[1], str)
            and isinstance(record[2], int)
        )
        if not ok:
            raise ValueError(f"{questions_file}: record {k} is {record!r}, expected [question, answer, image number]")
        sent, answer, number = record
        if answer not in answers:
            raise ValueError(f"{questions_file}: record {k} has answer {answer!r}, not one of {sorted(answers)}")
        if number not in images:
            raise ValueError(f"{questions_file}: record {k} refers to image {number}, not in {data / 'images'}")
        questions.append((sent, answer, number))
    return questions, images


def _records(split: str, questions: list[tuple[str, str, int]], keep: set[int]) -> list[dict[str, Any]]:
    return [
        {
            "answer_type": "yes/no" if answer in YES_NO else "other",
            "img_id": f"{split}_{number}",
            "label": {answer: 1.0},
            "question_id": QUESTION_ID_BASE[split] + k,
            "question_type": question_type(sent, answer),
            "sent": sent,
        }
        for k, (sent, answer, number) in enumerate(questions)
        if number in keep
    ]


def split_minival(numbers: list[int], fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """(train, minival) image numbers: a seeded random ``fraction`` of the images goes to minival."""
    if not 0 <= fraction < 1:
        raise ValueError(f"minival_fraction must be in [0, 1), got {fraction}")
    ordered = sorted(numbers)
    count = round(fraction * len(ordered))
    if fraction > 0 and len(ordered) > 1:
        count = min(max(count, 1), len(ordered) - 1)
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:count]
    minival = {ordered[i] for i in chosen}
    return set(ordered) - minival, minival


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _store_made_by(path: Path, extractor: str, options: dict[str, Any], dtype: str) -> bool:
    """True if ``path`` is a complete store made by this extractor configuration."""
    try:
        store = FeatureStore(path)
    except StoreError:
        return False
    source = store.source
    return source.get("extractor") == extractor and source.get("options") == options and store.dtype.name == dtype


def _store_usable(path: Path, extractor: str, options: dict[str, Any], dtype: str, ids: list[str]) -> bool:
    """True if ``path`` is a complete store made by this extractor configuration for exactly ``ids``."""
    return _store_made_by(path, extractor, options, dtype) and FeatureStore(path).ids == ids


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def prepare_easy_vqa(
    root: str | os.PathLike = "data/easy_vqa",
    extractor: str = "grid+object",
    *,
    extractor_options: dict[str, Any] | None = None,
    minival_fraction: float = 0.1,
    seed: int = 0,
    max_images: int | None = None,
    dtype: str = "float16",
    workers: int = 1,
    progress: bool = True,
) -> EasyVQAData:
    """Extract features and write the VQA-format JSON files of easy-VQA under ``root`` (see module doc).

    ``max_images`` keeps only the first N images of each split (by number) and their questions,
    for quick checks. ``workers`` > 1 extracts in that many processes.
    """
    root = Path(root)
    options = dict(extractor_options or {})
    answers = list(_package().get_answers())
    settings = {
        "format_version": FORMAT_VERSION,
        "extractor": extractor,
        "extractor_options": options,
        "dtype": dtype,
        "minival_fraction": minival_fraction,
        "seed": seed,
        "max_images": max_images,
        "package_dir": str(package_dir()),
    }
    stores = {split: root / f"{split}_{_slug(extractor)}.store" for split in SPLITS}
    json_splits = ("train", "minival", "test") if minival_fraction > 0 else ("train", "test")
    paths = {split: root / f"{split}.json" for split in json_splits}
    ans2label, label2ans = root / "trainval_ans2label.json", root / "trainval_label2ans.json"

    manifest = _read_manifest(root)
    files = [*paths.values(), ans2label, label2ans]
    made = all(_store_made_by(stores[s], extractor, options, dtype) for s in SPLITS)
    if manifest.get("settings") == settings and all(p.is_file() for p in files) and made:
        if progress:
            print(f"Reusing easy-VQA prepared in {root} (same settings)", file=sys.stderr)
        return _result(root, paths, stores, ans2label, label2ans, manifest.get("counts", {}))

    records: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        questions, images = read_split(split)
        numbers = sorted(images)[:max_images] if max_images is not None else sorted(images)
        ids = [f"{split}_{n}" for n in numbers]
        if not _store_usable(stores[split], extractor, options, dtype, ids):
            root.mkdir(parents=True, exist_ok=True)
            extract_folder(
                [images[n] for n in numbers],
                stores[split],
                extractor,
                extractor_options=options,
                ids=ids,
                dtype=dtype,
                workers=workers,
                progress=progress,
            )
        if split == "train":
            train, minival = split_minival(numbers, minival_fraction, seed)
            records["train"] = _records(split, questions, train)
            if minival_fraction > 0:
                records["minival"] = _records(split, questions, minival)
        else:
            records[split] = _records(split, questions, set(numbers))

    for split, recs in records.items():
        _write_json(paths[split], recs)
    _write_json(ans2label, {a: i for i, a in enumerate(answers)})
    _write_json(label2ans, answers)
    counts = {split: _count(recs) for split, recs in records.items()}
    names = {split: stores["train" if split == "minival" else split].name for split in records}
    _write_json(root / MANIFEST, {"settings": settings, "stores": names, "counts": counts})
    return _result(root, paths, stores, ans2label, label2ans, counts)


def _count(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"questions": len(records), "images": len({r["img_id"] for r in records})}
    for r in records:
        counts[r["question_type"]] = counts.get(r["question_type"], 0) + 1
    return counts


def _read_manifest(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _result(
    root: Path,
    paths: dict[str, Path],
    stores: dict[str, Path],
    ans2label: Path,
    label2ans: Path,
    counts: dict[str, dict[str, int]],
) -> EasyVQAData:
    split_stores = {split: stores["train" if split == "minival" else split] for split in paths}
    return EasyVQAData(root, dict(paths), split_stores, ans2label, label2ans, counts)


def describe(data: EasyVQAData) -> str:
    """A few lines saying what was prepared (for logs)."""
    lines = [f"easy-VQA in {data.root}:"]
    for split, path in data.splits.items():
        c = data.counts.get(split, {})
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("questions", "images"))
        lines.append(
            f"  {split}: {c.get('questions', '?')} questions on {c.get('images', '?')} images ({kinds}); "
            f"{path.name}, features {data.stores[split].name}"
        )
    return "\n".join(lines)
