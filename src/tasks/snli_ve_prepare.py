"""Build ``data/snli_ve/{train,valid,test}.json`` from the SNLI-VE release.

The release's ``snli_ve_{train,dev,test}.jsonl`` hold one JSON object per line; the fields read are
``Flikr30kID`` (the Flickr30k image, ``"2248275918.jpg"``), ``sentence2`` (the hypothesis),
``gold_label`` and ``pairID``. Each line becomes the record the task reads::

    {"pair_id": "2248275918.jpg#2r1e", "img_id": "2248275918", "sent": "...", "label": "entailment"}

Lines without a majority label (``gold_label`` "-", which SNLI-VE already removed) are skipped and
counted. The image id is the file name without ``.jpg``: the id of the Flickr30k obj36 features.

    python -m tasks.snli_ve_prepare --raw data/snli_ve/raw --out data/snli_ve

Synthetic SNLI-VE data in the same layout: ``tasks.snli_ve_synthetic``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lxrt.fileio import atomic_write_text
from tasks.answers import DataFormatError
from tasks.snli_ve import LABELS

RAW_TO_SPLIT = {"train": "train", "dev": "valid", "test": "test"}
FIELDS = ("Flikr30kID", "sentence2", "gold_label", "pairID")
NO_MAJORITY = "-"


def convert_line(raw: Any, where: str, line: int) -> dict[str, str] | None:
    """One release line -> the task's record (None: no majority label); errors name file and line."""
    if not isinstance(raw, dict):
        raise DataFormatError(f"{where}: line {line} is {type(raw).__name__}, expected a JSON object")
    for key in FIELDS:
        if not isinstance(raw.get(key), str):
            raise DataFormatError(f"{where}: line {line} has no string {key!r} field (got {raw.get(key)!r:.40})")
    label = raw["gold_label"]
    if label == NO_MAJORITY:
        return None
    if label not in LABELS:
        raise DataFormatError(f"{where}: line {line}: gold_label {label!r}, expected one of {list(LABELS)}")
    image = raw["Flikr30kID"]
    img_id = image[: -len(".jpg")] if image.endswith(".jpg") else image
    return {"pair_id": raw["pairID"], "img_id": img_id, "sent": raw["sentence2"], "label": label}


def convert_file(path: Path, progress: bool = True) -> tuple[list[dict[str, str]], int]:
    """Records of one ``.jsonl`` file and the number of lines skipped for want of a majority label."""
    records: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(tqdm(f, desc=path.name, unit=" lines", disable=not progress), 1):
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: line {number} is not valid JSON ({e.msg})") from e
            rec = convert_line(raw, str(path), number)
            if rec is None:
                skipped += 1
                continue
            pair = rec["pair_id"]
            if pair in seen:
                raise DataFormatError(f"{path}: line {number}: pairID {pair!r} also on line {seen[pair]}")
            seen[pair] = number
            records.append(rec)
    return records, skipped


def prepare(raw_dir: Path, out_dir: Path, progress: bool = True) -> dict[str, tuple[int, int]]:
    """Convert the three files; returns split -> (records written, lines skipped)."""
    paths = {split: raw_dir / f"snli_ve_{name}.jsonl" for name, split in RAW_TO_SPLIT.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"SNLI-VE release files not found: {', '.join(missing)}")
    counts = {}
    for split, path in paths.items():
        records, skipped = convert_file(path, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / f"{split}.json", json.dumps(records))
        counts[split] = (len(records), skipped)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, default=Path("data/snli_ve/raw"),
                   help="folder holding snli_ve_{train,dev,test}.jsonl")
    p.add_argument("--out", type=Path, default=Path("data/snli_ve"), help="where train/valid/test.json go")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        counts = prepare(args.raw, args.out, progress=not args.quiet)
    except (FileNotFoundError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, (n, skipped) in counts.items():
        print(f"{args.out / (split + '.json')}: {n} examples ({skipped} without a majority label skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
