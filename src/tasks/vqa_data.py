"""VQA v2: questions of ``data/vqa/<split>.json`` on COCO images, and their collate.

Record: ``{"question_id": int, "img_id": "COCO_val2014_000000393267", "sent": str,
"label": {answer: score}, "answer_type": str, "question_type": str}``; test has no label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.answers import AnswerTable, DataFormatError
from tasks.data_common import (
    MINIVAL_IMG_NUM,
    ImageFeatures,
    QACollator,
    TaskDataset,
    check_label,
    merge_topk,
    require,
)

if TYPE_CHECKING:
    from lxrt.tokenization import LXRTTokenizer

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


class VQADataset(TaskDataset):
    """VQA questions whose image is in the loaded COCO features.

    Every answer of a training label must be in the answer table (an error names the question,
    the answer and the file, where the original fails with a bare KeyError).
    """

    task = "vqa"
    id_key = "question_id"
    image_keys = ("img_id",)

    def __init__(
        self,
        splits: str | Sequence[str],
        root: str | Path = "data",
        topk: int | None = None,
        strict: bool = False,
        answers: AnswerTable | None = None,
        features: ImageFeatures | None = None,
        feature_dtype: str = "float16",
    ) -> None:
        self.answers = answers if answers is not None else AnswerTable.for_task("vqa", root)
        super().__init__(splits, root, topk, strict, features, feature_dtype)

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

    @property
    def num_answers(self) -> int:
        return self.answers.num_answers

    def collator(
        self,
        tokenizer: LXRTTokenizer,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
    ) -> VQACollator:
        return VQACollator(tokenizer, self.features, self.answers, max_length, num_boxes, feat_dtype)


class VQACollator(QACollator):
    """VQA batches: ids are the int question ids, targets ``{"target": (B, 3129)}`` soft scores."""

    def __init__(
        self,
        tokenizer: LXRTTokenizer,
        features: ImageFeatures,
        answers: AnswerTable,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
    ) -> None:
        super().__init__(tokenizer, features, answers, max_length, num_boxes, feat_dtype, skip_unknown=False)
