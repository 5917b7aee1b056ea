"""Build ``data/flickr30k/{train,valid,test}.json`` from the Karpathy split file, or a synthetic Flickr30k.

The Karpathy split file ``dataset_flickr30k.json`` holds ``{"images": [{"filename": "1000092795.jpg",
"split": "train", "sentences": [{"raw": "Two young guys ...", ...}, ...], ...}, ...]}`` (splits train / val /
test of 29k / 1k / 1k images, 5 captions each; "restval" images, where present, join train). Each caption
becomes one record of its split's file, in file order::

    {"caption_id": "1000092795.jpg#0", "img_id": "1000092795", "sent": "Two young guys ..."}

The image id is the file name without ``.jpg``: the id of the Flickr30k obj36 features.

    python -m tasks.flickr30k_prepare --karpathy data/flickr30k/dataset_flickr30k.json --out data/flickr30k

The synthetic data (``python -m tasks.synthetic``) writes a Karpathy file, converts it, and writes its own
feature file ``flickr30k/images_obj36.tsv``: each image shows two objects (a colour and a shape each; half of
its regions each) and its five captions name both, so a caption singles out its image among most others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from features.tsv import RegionRecord, write_tsv
from lxrt.fileio import atomic_write_text
from tasks.answers import DataFormatError
from tasks.flickr30k_data import OWN_FEATURES
from tasks.synthetic import COLORS, Generator, Image, register_synthetic, write_json

SPLITS = {"train": "train", "restval": "train", "val": "valid", "test": "test"}
"""Karpathy split -> the task's split."""


def convert_image(entry: Any, where: str) -> tuple[str, list[dict[str, str]]]:
    """One ``images[]`` entry -> (its split, its caption records); errors name the file and the entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not entry["filename"]:
        raise DataFormatError(f"{where} has no string 'filename' (got {entry!r:.60})")
    name = entry["filename"]
    where = f"{where} ({name})"
    if entry.get("split") not in SPLITS:
        raise DataFormatError(f"{where}: split {entry.get('split')!r}, expected one of {list(SPLITS)}")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise DataFormatError(f"{where}: 'sentences' is {sentences!r:.40}, expected a non-empty list")
    records = []
    for k, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise DataFormatError(f"{where}: sentences[{k}] has no non-empty string 'raw' (got {sentence!r:.60})")
        records.append({"caption_id": f"{name}#{k}", "img_id": Path(name).stem, "sent": raw.strip()})
    return SPLITS[entry["split"]], records


def prepare(karpathy: Path, out_dir: Path) -> dict[str, tuple[int, int]]:
    """Convert the Karpathy split file; returns split -> (images, captions) written."""
    if not karpathy.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {karpathy} (dataset_flickr30k.json)")
    try:
        data = json.loads(karpathy.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{karpathy}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataFormatError(f"{karpathy}: expected an object with an 'images' list (the Karpathy split format)")
    splits: dict[str, list[dict[str, str]]] = {"train": [], "valid": [], "test": []}
    images = dict.fromkeys(splits, 0)
    seen: dict[str, int] = {}
    for i, entry in enumerate(data["images"]):
        split, records = convert_image(entry, f"{karpathy}: images[{i}]")
        img_id = records[0]["img_id"]
        if img_id in seen:
            raise DataFormatError(f"{karpathy}: images[{i}] ({entry['filename']}) repeats images[{seen[img_id]}]")
        seen[img_id] = i
        splits[split] += records
        images[split] += 1
    empty = [s for s, n in images.items() if not n]
    if empty:
        raise DataFormatError(f"{karpathy}: no images of split(s) {', '.join(empty)} (Karpathy: train, val, test)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        atomic_write_text(out_dir / f"{split}.json", json.dumps(records))
    return {split: (images[split], len(records)) for split, records in splits.items()}


CAPTIONS = ("A {c} {s} and a {c2} {s2}.", "There is a {c2} {s2} next to a {c} {s}.",
            "A picture of a {c} {s} with a {c2} {s2}.", "A {c2} {s2} beside a {c} {s}.",
            "Two things: a {c} {s} and a {c2} {s2}.")
KARPATHY = "flickr30k/dataset_flickr30k.json"
SYNTHETIC_FILES = (KARPATHY, "flickr30k/train.json", "flickr30k/valid.json", "flickr30k/test.json", str(OWN_FEATURES))


def two_objects(gen: Generator, first: Image, second: Image) -> RegionRecord:
    """Regions of ``first``'s image: the first half drawn for its object, the rest for ``second``'s."""
    a, b = gen.record(first), gen.record(second)
    half = gen.cfg.num_boxes // 2
    scale = np.array([a.img_w / b.img_w, a.img_h / b.img_h] * 2, np.float32)  # b's boxes in a's pixels
    fields = {"boxes": (a.boxes, b.boxes * scale)}
    fields.update({f: (getattr(a, f), getattr(b, f)) for f in ("objects_id", "objects_conf", "attrs_id",
                                                                  "attrs_conf", "features")})
    return replace(a, **{f: np.concatenate([x[:half], y[half:]]) for f, (x, y) in fields.items()})


@dataclass(frozen=True)
class Flickr30kSizes:
    """Synthetic images (5 captions each)."""

    flickr30k_images: int = field(default=96, metadata={"help": "training images (val: 1/4, test: 1/8 as many)"})


@register_synthetic("flickr30k", SYNTHETIC_FILES, sizes=Flickr30kSizes)
def synthetic_flickr30k(gen: Generator, out: Path) -> dict[str, int]:
    """A Karpathy file of two-object images (train: ``flickr30k_images``, val: a quarter, test: an eighth),
    its conversion, and the images' features (see the module docstring)."""
    n, entries, pairs = gen.sizes.flickr30k_images, [], []
    for split, count in (("train", n), ("val", max(2, n // 4)), ("test", max(2, n // 8))):
        for _ in range(count):
            img_id = str(gen.unique_number(10**10, 10**11))  # outside SNLI-VE's synthetic ids
            first = gen.image(img_id)
            second = gen.image(img_id, color=gen.other(COLORS, first.color))
            words = {"c": first.color, "s": first.shape, "c2": second.color, "s2": second.shape}
            sents = [CAPTIONS[k].format(**words) for k in gen.rng.permutation(len(CAPTIONS))]
            entries.append({"filename": f"{img_id}.jpg", "imgid": len(entries), "split": split,
                            "sentences": [{"raw": s, "tokens": s.lower().rstrip(".").split()} for s in sents]})
            pairs.append((first, second))
    write_json(out / KARPATHY, {"dataset": "flickr30k", "images": entries})
    counts = {f"flickr30k/{split}.json": c for split, (_, c) in prepare(out / KARPATHY, out / "flickr30k").items()}
    (out / OWN_FEATURES).parent.mkdir(parents=True, exist_ok=True)
    count = write_tsv(out / OWN_FEATURES, (two_objects(gen, first, second) for first, second in pairs))
    return {KARPATHY: len(entries), **counts, str(OWN_FEATURES): count}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--karpathy", type=Path, default=Path("data/flickr30k/dataset_flickr30k.json"),
                   help="the Karpathy split file of Flickr30k")
    p.add_argument("--out", type=Path, default=Path("data/flickr30k"), help="where train/valid/test.json go")
    args = p.parse_args(argv)
    try:
        counts = prepare(args.karpathy, args.out)
    except (FileNotFoundError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, (images, captions) in counts.items():
        print(f"{args.out / (split + '.json')}: {captions} captions of {images} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
