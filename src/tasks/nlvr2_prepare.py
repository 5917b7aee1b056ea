"""Build ``data/nlvr2/{train,valid,test}.json`` from the raw NLVR2 release (JSON lines).

The raw files (``nlvr/nlvr2/data/{train,dev,test1}.json``, fetched by
``bash run/download_data.bash nlvr2``) hold one object per line with ``identifier``, ``sentence``
and ``label`` ("True"/"False"). Each becomes the record the task reads::

    {"identifier": "dev-850-0-0", "img0": "dev-850-0-img0", "img1": "dev-850-0-img1",
     "label": 1, "sent": "...", "uid": "nlvr2_valid_0"}

    python -m tasks.nlvr2_prepare --raw data/nlvr2/nlvr/nlvr2/data --out data/nlvr2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lxrt.fileio import atomic_write_text
from tasks.answers import DataFormatError

RAW_TO_SPLIT = {"train": "train", "dev": "valid", "test1": "test"}


def convert_record(raw: dict[str, Any], split: str, index: int, where: str) -> dict[str, Any]:
    """One raw NLVR2 line -> the task's record (clear errors naming file and line)."""
    for key in ("identifier", "sentence", "label"):
        if key not in raw:
            raise DataFormatError(f"{where}: line {index + 1} has no {key!r} field")
    if raw["label"] not in ("True", "False"):
        raise DataFormatError(f"{where}: line {index + 1}: label {raw['label']!r}, expected 'True' or 'False'")
    ident = raw["identifier"]
    pair, sep, _ = ident.rpartition("-")
    if not sep:
        raise DataFormatError(f"{where}: line {index + 1}: identifier {ident!r} has no '-<n>' suffix")
    return {
        "identifier": ident,
        "img0": f"{pair}-img0",
        "img1": f"{pair}-img1",
        "label": int(raw["label"] == "True"),
        "sent": raw["sentence"],
        "uid": f"nlvr2_{split}_{index}",
    }


def convert_file(raw_path: Path, split: str) -> list[dict[str, Any]]:
    records = []
    with open(raw_path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{raw_path}: line {index + 1} is not valid JSON ({e.msg})") from e
            records.append(convert_record(raw, split, len(records), str(raw_path)))
    return records


def prepare(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    counts = {}
    for raw_name, split in RAW_TO_SPLIT.items():
        raw_path = raw_dir / f"{raw_name}.json"
        if not raw_path.is_file():
            continue
        records = convert_file(raw_path, split)
        atomic_write_text(out_dir / f"{split}.json", json.dumps(records))
        counts[split] = len(records)
    if not counts:
        raise FileNotFoundError(f"no raw NLVR2 files ({', '.join(RAW_TO_SPLIT)}).json in {raw_dir}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, default=Path("data/nlvr2/nlvr/nlvr2/data"), help="raw NLVR2 data folder")
    p.add_argument("--out", type=Path, default=Path("data/nlvr2"), help="where train/valid/test.json go")
    args = p.parse_args(argv)
    for split, n in prepare(args.raw, args.out).items():
        print(f"{args.out / (split + '.json')}: {n} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
