"""Referring expressions (RefCOCO, RefCOCO+, RefCOCOg): which region of the image does a phrase describe?

``python -m tasks.refcoco --dataset refcocog --help``. Reads ``data/<dataset>/<split>.json`` (``tasks.refcoco_prepare``)
and COCO train2014 obj36 features. A head scores each region; as ViLBERT, a region is trained (binary cross-entropy)
towards its IoU with the ground truth where that is >= 0.5, else 0 (soft targets prefer the tighter of two matching
boxes; the threshold is the metric's). Accuracy: the argmax region's box has IoU >= 0.5, in image pixels (store boxes
times the image size; areas w * h, as COCO). Writes ``<split>_predict.json`` (per expression ``sent_id``, ``ref_id``,
the region ``index`` and its ``box`` [x, y, w, h] in pixels) and ``<split>_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.recipes import LXR955, register
from engine.task import PredictSplit
from lxrt.fileio import atomic_write_text
from tasks.base import FinetuneTask, model_config_for
from tasks.completeness import submission_ids
from tasks.data_common import ImageFeatures, TaskDataset, TextImageCollator, parse_splits, require
from tasks.finetune import main as run_main
from tasks.models import RegionScorer
from tasks.presentation import Presentation
from tasks.refcoco_prepare import SPLITS, UNC, box_iou, check_box, xyxy
from tasks.registry import register_task
from tasks.submission import check_complete

FEATURES, THRESHOLD = "mscoco_imgfeat/train2014_obj36.tsv", 0.5  # the COCO features; the IoU of a correct box


class RefCollator(TextImageCollator):
    """Targets ``gt``, the pixel box (B, 4), and ``scale``, ``w h w h`` turning the store's boxes into pixels."""

    def targets(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        images = [next(s for s in self.features.stores.values() if e["img_id"] in s).get(e["img_id"]) for e in examples]
        return {"gt": xyxy(torch.tensor([e["gt_box"] for e in examples])),
                "scale": torch.tensor([[r.img_w, r.img_h] * 2 for r in images], dtype=torch.float32)}


class RefDataset(TaskDataset):
    """Expressions of ``<root>/<folder>/<split>.json`` on the images of ``features`` (an ``ImageFeatures``)."""

    id_key, image_keys, label_key, subset_by = "sent_id", ("img_id",), "gt_box", "records"

    def __init__(self, splits: str, root: str | Path, topk: int | None, folder: str, **kwargs: Any) -> None:
        self.task = folder
        super().__init__(splits, root, topk, **kwargs)

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        for key, kind in (("sent_id", int), ("ref_id", int), ("img_id", str), ("sent", str)):
            require(rec, key, kind, path, index)
        check_box(require(rec, "gt_box", list, path, index), f"{path}: record {index} gt_box")

    def collator(self, tokenizer: Any, max_length: int = 20, **options: Any) -> RefCollator:
        return RefCollator(tokenizer, self.features, max_length, id_key=self.id_key, **options)


@register_task
class RefCOCOTask(FinetuneTask):
    """The three datasets share all but folder and splits: ``on(dataset)`` is the task reading that dataset."""

    name, data_folder, known_splits, features, dataset_class = "refcoco", "refcoco", UNC, FEATURES, RefDataset
    num_classes, recipe, model_class = 1, "refcoco_lxr955", RegionScorer  # one score per region
    description = "Fine-tune / test LXMERT on RefCOCO, RefCOCO+ or RefCOCOg (referring expressions)."
    presentation = Presentation(images="one", text="expression", output="box")

    @classmethod
    def on(cls, dataset: str, features: str = FEATURES) -> type[RefCOCOTask]:
        return type(cls.__name__, (cls,), dict(data_folder=dataset, known_splits=SPLITS[dataset], features=features))

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        group.add_argument("--dataset", choices=list(SPLITS), default=cls.data_folder, help="the data folder")
        group.add_argument("--features", default=cls.features, help="obj36 TSV (or store) under the data root")

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return {Path(root) / cls.features: None}

    def make_dataset(self, splits: str, topk: int | None, train: bool = False) -> RefDataset:
        features = ImageFeatures.open(self.feature_files([], Path(self.cfg.data_root), None))
        return RefDataset(splits, self.cfg.data_root, topk, self.folder(), features=features)

    @classmethod
    def predict_splits(cls, name: str) -> list[PredictSplit]:
        cls.check_split_names(parse_splits(name), "--test")
        return [PredictSplit(s, s) for s in parse_splits(name)]

    def build_model(self) -> nn.Module:
        return RegionScorer(model_config_for(self.cfg, self.first_dataset(), self.load_facts()))

    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        iou = box_iou(batch.boxes.float() * batch.targets["scale"][:, None], batch.targets["gt"][:, None])
        target = torch.where(iou >= THRESHOLD, iou, torch.zeros_like(iou))
        weight = None if batch.visual_mask is None else batch.visual_mask.to(output.dtype)
        return F.binary_cross_entropy_with_logits(output, target, weight, reduction="sum") / len(output), {}

    def prediction_codes(self, output: Tensor, batch: Batch) -> Tensor:
        """Per expression ``[index, x, y, w, h]``: the argmax region and its box in pixels."""
        index = output.argmax(-1)
        box = batch.boxes[torch.arange(len(index), device=index.device), index].float() * batch.targets["scale"]
        return torch.cat([index[:, None].float(), box[:, :2], box[:, 2:] - box[:, :2]], -1)

    def predict(self, output: Tensor, batch: Batch) -> dict[Any, Any]:
        return self.decode_predictions(self.prediction_codes(output, batch).tolist(), batch.ids)

    def decode_predictions(self, codes: list[list[float]], ids: list[Any]) -> dict[Any, Any]:
        return {i: {"index": int(c[0]), "box": [round(v, 2) for v in c[1:]]} for i, c in zip(ids, codes)}

    def score(self, predictions: Mapping[Any, Any], dataset: TaskDataset) -> dict[str, float]:
        pairs = [(p["box"], dataset.id2datum[i]["gt_box"]) for i, p in predictions.items()]
        iou = box_iou(*(xyxy(torch.tensor(b, dtype=torch.float64)) for b in zip(*pairs))) if pairs else None
        return {} if iou is None else {"accuracy": float((iou >= THRESHOLD).double().mean())}

    def write_predictions(self, predictions: Mapping, dataset: TaskDataset, output_dir: Path, split: str) -> list[Path]:
        path, out = Path(output_dir) / f"{split}_predict.json", Path(output_dir) / f"{split}_accuracy.json"
        check_complete(predictions, submission_ids(self, dataset, self.cfg.allow_missing), str(path))
        rows = [{"sent_id": i, "ref_id": dataset.id2datum[i]["ref_id"], **p} for i, p in predictions.items()]
        summary = {"split": split, "expressions": len(rows), **self.score(predictions, dataset)}
        return [atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True)),
                atomic_write_text(out, json.dumps(summary, indent=2, sort_keys=True))]


# The original's fine-tuning settings, not tuned here; 32 tokens hold nearly every RefCOCOg expression.
BASE = dict(task="refcoco", batch_size=32, lr=5e-5, epochs=4, max_seq_length=32, pooled_only=False, model=LXR955)
register("refcoco_lxr955", TrainConfig(train="train", valid="val", load_lxmert="snap/pretrained/model", optim="bert",
                                       warmup=0.1, clip_norm=5.0, **BASE))
register("refcoco_test", TrainConfig(**BASE))


def main(argv: Sequence[str] | None = None) -> dict:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # the dataset decides the checks
    RefCOCOTask.add_arguments(pre)
    known, _ = pre.parse_known_args(argv)
    return run_main(RefCOCOTask.on(known.dataset, known.features), argv)


if __name__ == "__main__":
    main()
