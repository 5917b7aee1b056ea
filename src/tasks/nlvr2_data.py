"""NLVR2: one sentence about a pair of images (``data/nlvr2/<split>.json``), and its collate.

Record: ``{"identifier": "dev-850-0-0", "img0": "dev-850-0-img0", "img1": "dev-850-0-img1",
"sent": str, "label": 0 | 1, "uid": "nlvr2_dev_0"}``. A batch of B examples holds 2B
(sentence, image) pairs: rows 2i and 2i+1 are example i's sentence with img0 and img1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.answers import DataFormatError
from tasks.data_common import TaskDataset, merge_topk, require

FEATURE_DIR = "nlvr2_imgfeat"


def nlvr2_feature_file(split: str) -> str:
    """train -> train_obj36.tsv, valid -> valid_obj36.tsv, any split named *test* -> test_obj36.tsv,
    *hidden* (the unreleased test2 images) -> hidden_obj36.tsv."""
    if split in ("train", "valid"):
        return f"{split}_obj36.tsv"
    if "test" in split:
        return "test_obj36.tsv"
    if "hidden" in split:
        return "hidden_obj36.tsv"
    raise ValueError(
        f"no feature file is known for NLVR2 split {split!r} (train, valid, or a name with 'test' or 'hidden')"
    )


def nlvr2_feature_files(splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
    files: dict[Path, int | None] = {}
    for split in splits:
        path = Path(root) / FEATURE_DIR / nlvr2_feature_file(split)
        files[path] = merge_topk(files[path], topk) if path in files else topk
    return files


class NLVR2Dataset(TaskDataset):
    """NLVR2 examples whose two images are both in the loaded features; the default collator gives
    2B pairs (sentences ``[s0, s0, s1, s1, ...]``, images ``[ex0-img0, ex0-img1, ...]``) and
    targets ``{"label": (B,) int64}``."""

    task = "nlvr2"
    id_key = "identifier"
    image_keys = ("img0", "img1")

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return nlvr2_feature_files(splits, root, topk)

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        ident = require(rec, "identifier", str, path, index)
        for key in ("img0", "img1", "sent"):
            require(rec, key, str, path, index)
        label = rec.get("label", 0)
        if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
            raise DataFormatError(f"{path}: record {index} ({ident}) has label {rec['label']!r}, expected 0 or 1")
