"""Flickr30k retrieval data: the captions, their training view (negatives) and evaluation view (gallery), recall.

``data/flickr30k/<split>.json`` holds one record per caption in file order (``python -m tasks.flickr30k_prepare``
writes them), ``{"caption_id": "1000092795.jpg#0", "img_id": "1000092795", "sent": "Two young guys ..."}``. A
split's gallery is its images in order of first appearance. The features are the Flickr30k obj36 file SNLI-VE
reads, ``flickr30k_imgfeat/flickr30k_obj36.tsv``, or ``flickr30k/images_obj36.tsv`` when that is present (the
synthetic data's images, which never share a file with another task's).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.batch import Batch
from features.store import store_path_for
from tasks.answers import DataFormatError
from tasks.data_common import TaskDataset, text_image_batch

FEATURES, OWN_FEATURES = Path("flickr30k_imgfeat/flickr30k_obj36.tsv"), Path("flickr30k/images_obj36.tsv")
BLOCK = 128  # gallery images per evaluation example
Item = tuple[Any, str, list[str], "int | None"]  # (id, caption, its images, the positive's index when training)


class Captions(TaskDataset):
    """The evaluation view: every caption (of the first ``gallery`` images) against every gallery image,
    ``BLOCK`` images per example; caption c against block b is example ``c * blocks + b``."""

    task, id_key, subset_by = "flickr30k", "caption_id", "records"

    def __init__(self, splits: str, root: str | Path, topk: int | None = None, gallery: int = 0, negatives: int = 0,
                 seed: int = 0) -> None:
        super().__init__(splits, root, topk)
        self.gallery = list(dict.fromkeys(r["img_id"] for r in self.data))[: gallery or None]
        index = {img: i for i, img in enumerate(self.gallery)}
        self.captions = [r for r in self.data if r["img_id"] in index]
        self.gold = [index[r["img_id"]] for r in self.captions]
        self.negatives, self.seed, self.epoch = negatives, seed, 0
        if negatives >= len(self.gallery):
            raise DataFormatError(f"{self.name}: {len(self.gallery)} images, too few for {negatives} negatives each")
        self.block = min(BLOCK, len(self.gallery))
        self.blocks = -(-len(self.gallery) // self.block)  # the last block is padded with the last image
        self.padded = self.gallery + self.gallery[-1:] * (self.blocks * self.block - len(self.gallery))

    @classmethod
    def feature_files(cls, splits: Any, root: Path, topk: int | None) -> dict[Path, int | None]:
        own = Path(root) / OWN_FEATURES
        return {own if own.is_file() or store_path_for(own).is_dir() else Path(root) / FEATURES: topk}

    def __len__(self) -> int:
        return len(self.captions) * self.blocks

    def __getitem__(self, k: int) -> Item:
        c, b = divmod(k, self.blocks)
        return k, self.captions[c]["sent"], self.padded[b * self.block : (b + 1) * self.block], None

    def collator(self, tokenizer: Any, max_length: int = 20, num_boxes: int | None = None,
                 feat_dtype: Any = np.float32) -> partial:
        return partial(self.collate, tokenizer, max_length, num_boxes, feat_dtype)

    def collate(self, tokenizer: Any, max_length: int, num_boxes: int | None, dtype: Any, items: list[Item]) -> Batch:
        """Each caption with each of its images, in order; targets (training): each positive's gallery index."""
        text = tokenizer([s for _, s, images, _ in items for _ in images], max_length=max_length)
        regions = self.features.gather([i for _, _, images, _ in items for i in images], num_boxes, dtype)
        targets = {"image": torch.tensor([p for *_, p in items])} if items[0][3] is not None else {}
        return text_image_batch(text, regions, targets, ids=[k for k, *_ in items])

    def matrix(self, predictions: dict[Any, list[float]]) -> np.ndarray:
        """The captions x gallery scores from the evaluation's rows (example -> its block's scores)."""
        rows = [predictions.get(k) for k in range(len(self))]
        if any(r is None or not np.all(np.isfinite(r)) for r in rows):
            bad = sum(r is None or not np.all(np.isfinite(r)) for r in rows)
            raise ValueError(f"{self.name}: {bad} of {len(rows)} rows of scores are missing or not finite")
        return np.asarray(rows, np.float32).reshape(len(self.captions), -1)[:, : len(self.gallery)]


class TrainView(Captions):
    """Example i: caption i with its image, then ``negatives`` other images drawn anew each epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> Item:
        pos, others = self.gold[i], len(self.gallery) - 1
        neg = np.random.default_rng((self.seed, self.epoch, i)).choice(others, self.negatives, replace=False)
        images = [self.gallery[j] for j in (pos, *(neg + (neg >= pos)).tolist())]
        return self.captions[i][self.id_key], self.captions[i]["sent"], images, pos


def recalls(scores: np.ndarray, gold: list[int], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Text->image and image->text recall@K (fractions) and their sum ``rsum``; ties count against the gold."""
    n = np.arange(len(gold))
    is_gold = np.zeros(scores.shape, bool)
    is_gold[n, gold] = True
    t2i = (scores >= scores[n, gold][:, None]).sum(1) - 1  # other images scoring at least the gold's
    i2t = ((scores >= np.where(is_gold, scores, -np.inf).max(0)) & ~is_gold).sum(0)  # vs. its best caption
    out = {f"{name}_r{k}": float(np.mean(rank < k)) for name, rank in (("t2i", t2i), ("i2t", i2t)) for k in ks}
    return {**out, "rsum": sum(out.values())}


def rows_of(batch: Batch, text: Tensor, image: Tensor) -> Batch:
    """Pairs of ``batch``'s sentence rows ``text`` with its image rows ``image``."""
    mask = None if batch.visual_mask is None else batch.visual_mask[image]
    return Batch(batch.input_ids[text], batch.attention_mask[text], batch.token_type_ids[text], batch.feats[image],
                 batch.boxes[image], mask)
