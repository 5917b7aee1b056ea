"""Synthetic pretraining corpus (see ``tasks.synthetic``): ``lxmert/<split>.json`` and ``all_ans.json``.

As in the original release, the corpus is built on the images of the fine-tuning tasks' feature
files (``SPLIT_FEATURES``: COCO for ``mscoco_*``, Visual Genome for ``vgnococo``), which their
tasks write and this writer reads. Each image gets ``captions_per_image`` captions (source
``mscoco`` or ``vg``), the questions every task offers on it (``tasks.synthetic.offer_questions``,
under the offering task's name as the QA source) and, on Visual Genome images, visual7w questions
(one with an answer no task uses: a pretraining-only answer). Images a task holds out for
evaluation form ``mscoco_minival`` (the rest of their file ``mscoco_nominival``); test images whose
labels are secret are left out. ``all_ans.json`` lists every answer of the offered and visual7w
questions with the sources using it, in an order of its own (its ids differ from the tasks' tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.synthetic import (
    Generator,
    Image,
    OfferedQuestions,
    offered_files,
    read_images,
    read_offers,
    register_synthetic,
    write_json,
)

from .data import SPLIT_FEATURES
from .task import PretrainTask

FOLDER = "lxmert"
CAPTION_SOURCES = {"mscoco_train": "mscoco", "mscoco_nominival": "mscoco", "mscoco_minival": "mscoco", "vgnococo": "vg"}
HELD_OUT_SPLIT = "mscoco_minival"  # takes its file's held-out images; the splits sharing the file leave them
VISUAL7W = "visual7w"
VISUAL7W_SPLITS = ("vgnococo",)
VISUAL7W_ONLY_ANSWER = "daytime"  # a pretraining-only answer
FILES = (*(f"{FOLDER}/{s}.json" for s in SPLIT_FEATURES), f"{FOLDER}/all_ans.json")

QA = list[tuple[str, dict[str, float]]]


@dataclass(frozen=True)
class CorpusSizes:
    """Captions of every corpus image."""

    captions_per_image: int = field(default=2, metadata={"help": "captions of each pretraining image"})


def corpus_reads() -> list[str]:
    """The feature files of the corpus splits and the files of every task's offered questions."""
    return [*dict.fromkeys(SPLIT_FEATURES.values()), *offered_files()]


def split_images(out: Path, offers: dict[str, OfferedQuestions]) -> dict[str, list[Image]]:
    """Corpus split -> its images, in feature-file order."""
    hidden = frozenset().union(*(o.hidden for o in offers.values()))
    held_out = frozenset().union(*(o.held_out for o in offers.values()))
    in_file = {rel: read_images(out / rel) for rel in dict.fromkeys(SPLIT_FEATURES.values())}
    shares = SPLIT_FEATURES[HELD_OUT_SPLIT]
    images = {}
    for split, rel in SPLIT_FEATURES.items():
        keep = [img for img in in_file[rel] if img.img_id not in hidden]
        if split == HELD_OUT_SPLIT:
            keep = [img for img in keep if img.img_id in held_out]
        elif rel == shares:
            keep = [img for img in keep if img.img_id not in held_out]
        images[split] = keep
    return images


def visual7w(gen: Generator, img: Image) -> QA:
    """A colour question, and half of the time one whose answer only visual7w has."""
    qa = [(f"What color is the {img.shape}?", {img.color: 1.0})]
    if gen.rng.random() < 0.5:
        qa.append(("When was this picture taken?", {VISUAL7W_ONLY_ANSWER: 1.0}))
    return qa


def entry(gen: Generator, img: Image, caption_source: str, qa: dict[str, QA]) -> dict[str, Any]:
    """One image's corpus entry: its captions first, then its questions by source."""
    item: dict[str, Any] = {"img_id": img.img_id, "labelf": {}, "sentf": {}}
    item["sentf"][caption_source] = [gen.caption(img) for _ in range(gen.sizes.captions_per_image)]
    for source, pairs in qa.items():
        item["sentf"][source] = [s for s, _ in pairs]
        item["labelf"][source] = [label for _, label in pairs]
    return item


@register_synthetic(PretrainTask.name, FILES, sizes=CorpusSizes, reads=corpus_reads)
def synthetic_corpus(gen: Generator, out: Path) -> dict[str, int]:
    """The corpus splits and the pretraining answer table (see the module docstring)."""
    offers = read_offers(out)
    dsets: dict[str, list[str]] = {}
    for source, offer in offers.items():
        for answer in sorted(offer.answers):
            dsets.setdefault(answer, []).append(source)
    written: dict[str, int] = {}
    for split, images in split_images(out, offers).items():
        entries = []
        for img in images:
            qa = {source: o.questions[img.img_id] for source, o in offers.items() if img.img_id in o.questions}
            if split in VISUAL7W_SPLITS:
                qa[VISUAL7W] = visual7w(gen, img)
                for _, label in qa[VISUAL7W]:
                    for answer in label:
                        if VISUAL7W not in dsets.setdefault(answer, []):
                            dsets[answer].append(VISUAL7W)
            entries.append(entry(gen, img, CAPTION_SOURCES[split], qa))
        write_json(out / FOLDER / f"{split}.json", entries)
        written[f"{FOLDER}/{split}.json"] = len(entries)
    answers = sorted(dsets)
    order = gen.rng.permutation(len(answers))  # the pretraining ids differ from the task tables'
    table = [{"ans": answers[i], "dsets": dsets[answers[i]]} for i in order]
    write_json(out / FOLDER / "all_ans.json", table, indent=4)
    written[f"{FOLDER}/all_ans.json"] = len(answers)
    return written
