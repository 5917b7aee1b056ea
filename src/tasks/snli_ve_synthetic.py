"""Synthetic SNLI-VE whose labels need the image (see ``tasks.synthetic``).

Writes ``snli_ve/{train,valid,test}.json`` (the records ``tasks.snli_ve_prepare`` writes from the
release) and ``flickr30k_imgfeat/flickr30k_obj36.tsv``. Each hypothesis names a colour and a shape,
and its label says whether the image's dominant colour and shape match (entailment: both; neutral:
the colour only; contradiction: not the colour). Every (colour, shape) sentence is equally likely
under each label, so a model that reads only the words stays at chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.snli_ve import FEATURES, LABELS, SNLIVETask
from tasks.synthetic import COLORS, SHAPES, Generator, register_synthetic, write_features, write_json

HYPOTHESES = ("There is a {c} {s} in the image.", "The picture shows a {c} {s}.", "A {c} {s} can be seen here.")
SPLITS = ("train", "valid", "test")
FOLDER = SNLIVETask.folder()
FILES = (*(f"{FOLDER}/{s}.json" for s in SPLITS), FEATURES.as_posix())


@dataclass(frozen=True)
class SNLIVESizes:
    """Flickr30k images (valid: a quarter as many, test: an eighth; hypotheses: ``questions_per_image`` each)."""

    snli_ve_images: int = field(default=96, metadata={"help": "training images (valid: 1/4, test: 1/8 as many)"})


@register_synthetic(SNLIVETask.name, FILES, sizes=SNLIVESizes)
def synthetic_snli_ve(gen: Generator, out: Path) -> dict[str, int]:
    """Synthetic SNLI-VE whose labels need the image (see the module docstring)."""
    n, rng = gen.sizes.snli_ve_images, gen.rng
    sizes = {"train": n, "valid": max(1, n // 4), "test": max(1, n // 8)}
    counts, everything = {}, []
    for split, count in sizes.items():
        images = [gen.image(str(gen.unique_number(10**8, 10**10))) for _ in range(count)]
        records = []
        for img in images:
            for k in range(gen.cfg.questions_per_image):
                label = LABELS[rng.integers(len(LABELS))]
                if label == "entailment":
                    color, shape = img.color, img.shape
                elif label == "neutral":
                    color, shape = img.color, gen.other(SHAPES, img.shape)
                else:
                    color, shape = gen.other(COLORS, img.color), SHAPES[rng.integers(len(SHAPES))]
                sent = HYPOTHESES[rng.integers(len(HYPOTHESES))].format(c=color, s=shape)
                records.append({"pair_id": f"{img.img_id}.jpg#{k}r1{label[0]}", "img_id": img.img_id,
                                "sent": sent, "label": label})
        write_json(out / FOLDER / f"{split}.json", records)
        counts[f"{FOLDER}/{split}.json"] = len(records)
        everything += images
    counts[FEATURES.as_posix()] = write_features(out / FEATURES, gen, everything)
    return counts
