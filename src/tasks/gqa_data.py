"""GQA (balanced): questions of ``data/gqa/<split>.json`` on Visual Genome / GQA images, and their collate.

Record: ``{"question_id": "07333408", "img_id": "2375429", "sent": str, "label": {answer: 1.0}}``;
submit has no label. Question ids are strings (the submission needs them as such).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.data_common import QADataset, check_label, merge_topk, require

FEATURE_DIR = "vg_gqa_imgfeat"
TESTDEV_SPLITS = ("testdev", "testdev_all")
TESTDEV_FEATURES = "gqa_testdev_obj36.tsv"
VG_GQA_FEATURES = "vg_gqa_obj36.tsv"  # VG images (train/valid) and GQA test images (submit)


def gqa_feature_files(splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
    """testdev reads gqa_testdev_obj36.tsv whole (even with tiny/fast); other splits vg_gqa_obj36.tsv.

    The original loads only the testdev file whenever testdev is among the splits; here every split
    gets its own file, so e.g. ``train,testdev`` keeps its training questions.
    """
    files: dict[Path, int | None] = {}
    for split in splits:
        if split in TESTDEV_SPLITS:
            path, load = Path(root) / FEATURE_DIR / TESTDEV_FEATURES, None
        else:
            path, load = Path(root) / FEATURE_DIR / VG_GQA_FEATURES, topk
        files[path] = merge_topk(files[path], load) if path in files else load
    return files


class GQADataset(QADataset):
    """GQA questions whose image is in the loaded features. Answers outside the table are skipped
    (their target row stays zero), as in the original."""

    task = "gqa"
    skip_unknown_answers = True
    id_key = "question_id"
    image_keys = ("img_id",)

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return gqa_feature_files(splits, root, topk)

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        qid = require(rec, "question_id", (str, int), path, index)
        rec["question_id"] = str(qid)
        require(rec, "img_id", str, path, index)
        require(rec, "sent", str, path, index)
        if "label" in rec:
            check_label(rec["label"], path, index, qid)
