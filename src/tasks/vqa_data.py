"""VQA v2: questions of ``data/vqa/<split>.json`` on COCO images, and their collate.

Record: ``{"question_id": int, "img_id": "COCO_val2014_000000393267", "sent": str,
"label": {answer: score}, "answer_type": str, "question_type": str}``; test has no label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.answers import DataFormatError
from tasks.data_common import (
    MINIVAL_IMG_NUM,
    QADataset,
    check_label,
    merge_topk,
    require,
)

FEATURE_DIR = "mscoco_imgfeat"
# Split -> COCO image set whose ``<set>_obj36.tsv`` holds its images.
SPLIT2IMAGES: dict[str, str] = {
    "train": "train2014",
    "valid": "val2014",
    "minival": "val2014",
    "nominival": "val2014",
    "test": "test2015",
}


def vqa_feature_files(splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
    """TSV -> lines to load. minival reads only the first 5000 images of val2014 unless tiny/fast."""
    files: dict[Path, int | None] = {}
    for split in splits:
        if split not in SPLIT2IMAGES:
            raise ValueError(f"no COCO feature file is known for VQA split {split!r} (known: {list(SPLIT2IMAGES)})")
        path = Path(root) / FEATURE_DIR / f"{SPLIT2IMAGES[split]}_obj36.tsv"
        load = MINIVAL_IMG_NUM if split == "minival" and topk is None else topk
        files[path] = merge_topk(files[path], load) if path in files else load
    return files


class VQADataset(QADataset):
    """VQA questions whose image is in the loaded COCO features.

    Every answer of a training label must be in the answer table (an error names the question,
    the answer and the file, where the original fails with a bare KeyError).
    """

    task = "vqa"
    id_key = "question_id"
    image_keys = ("img_id",)

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return vqa_feature_files(splits, root, topk)

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        qid = require(rec, "question_id", int, path, index)
        require(rec, "img_id", str, path, index)
        require(rec, "sent", str, path, index)
        if "label" in rec:
            for ans in check_label(rec["label"], path, index, qid):
                if ans not in self.answers:
                    raise DataFormatError(
                        f"{path}: question_id {qid} has answer {ans!r}, which is not in {self.answers.source}"
                    )
