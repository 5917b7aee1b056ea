"""A synthetic RefCOCO for tests and smoke runs (``python -m tasks.synthetic`` writes it with the rest).

Files: ``refcoco/{train,val,testA,testB}.json`` in the records' format (``tasks.refcoco_prepare``) and features of
their own, ``refcoco_imgfeat/synthetic_obj36.tsv`` (run with ``--features refcoco_imgfeat/synthetic_obj36.tsv``).
Each image has 12-36 regions (``num_boxes`` at most) of random colour, shape and box; an expression names the
colour and shape of one region whose pair is unique in its image: the words pick it out, and the region order is
random. The ground truth is that region's box moved by up to 3% of its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.tsv import RegionRecord, write_tsv
from tasks.refcoco_prepare import SPLITS
from tasks.synthetic import COLORS, SHAPES, Generator, register_synthetic, write_json

SYNTHETIC_FEATURES = "refcoco_imgfeat/synthetic_obj36.tsv"
TEMPLATES = ("the {c} {s}", "{c} {s}", "a {c} {s} in the picture", "the {s} that is {c}")


def synthetic_image(gen: Generator, img_id: str, refs: int) -> tuple[RegionRecord, list[int]]:
    """An image of 12-36 regions (random colour, shape, box) and ``refs`` regions whose colour and shape pair is
    unique in it: the ones the expressions refer to."""
    rng, cfg = gen.rng, gen.cfg
    n = int(rng.integers(min(12, cfg.num_boxes), cfg.num_boxes + 1))
    colors, shapes = rng.integers(len(COLORS), size=n), rng.integers(len(SHAPES), size=n)
    targets = [int(t) for t in rng.choice(n, size=min(refs, n), replace=False)]
    pairs: set[tuple[int, int]] = set()
    for j in [*targets, *(j for j in range(n) if j not in targets)]:  # targets first: each pair unique
        while (colors[j], shapes[j]) in pairs:
            colors[j], shapes[j] = rng.integers(len(COLORS)), rng.integers(len(SHAPES))
        if j in targets:
            pairs.add((colors[j], shapes[j]))
    w, h = (int(v) for v in rng.integers(320, 640, size=2))
    size = rng.uniform(0.1, 0.45, (n, 2)) * (w, h)
    corner = rng.uniform(0.0, 1.0, (n, 2)) * ((w, h) - size)
    noise = rng.normal(0.0, cfg.noise, (n, cfg.feat_dim))
    feats = np.maximum(gen.color_protos[colors] + gen.shape_protos[shapes] + noise, 0.0).astype(np.float32)
    conf = rng.uniform(0.3, 1.0, n).astype(np.float32)
    record = RegionRecord(img_id=img_id, img_h=h, img_w=w, objects_id=shapes.astype(np.int64), objects_conf=conf,
                          attrs_id=colors.astype(np.int64), attrs_conf=conf,
                          boxes=np.concatenate([corner, corner + size], 1).astype(np.float32), features=feats)
    return record, targets


@dataclass(frozen=True)
class RefCOCOSizes:
    """Synthetic images (2 referred regions each, 2 expressions per region)."""

    refcoco_images: int = field(default=96, metadata={"help": "training images (val: 1/4, testA/testB: 1/8 as many)"})


@register_synthetic("refcoco", (*(f"refcoco/{s}.json" for s in SPLITS["refcoco"]), SYNTHETIC_FEATURES),
                    sizes=RefCOCOSizes)
def synthetic_refcoco(gen: Generator, out: Path) -> dict[str, int]:
    """Synthetic RefCOCO (see the module docstring): 2 refs per image, 2 expressions per ref."""
    n, rng = gen.sizes.refcoco_images, gen.rng
    counts, images, ref_id = {}, [], 0
    for split, count in zip(SPLITS["refcoco"], (n, max(1, n // 4), max(1, n // 8), max(1, n // 8))):
        records = []
        for _ in range(count):
            img_id = f"COCO_train2014_{gen.unique_number(1, 582000):012d}"
            image, targets = synthetic_image(gen, img_id, refs=2)
            images.append(image)
            for t in targets:
                x1, y1, x2, y2 = (float(v) for v in image.boxes[t])
                dx, dy = rng.uniform(-0.03, 0.03, 2) * (x2 - x1, y2 - y1)
                x, y = max(0.0, x1 + dx), max(0.0, y1 + dy)
                box = [round(x, 2), round(y, 2), round(min(x2 + dx, image.img_w) - x, 2),
                       round(min(y2 + dy, image.img_h) - y, 2)]
                color, shape = COLORS[image.attrs_id[t]], SHAPES[image.objects_id[t]]
                for j, k in enumerate(rng.choice(len(TEMPLATES), size=2, replace=False)):
                    records.append({"ref_id": ref_id, "sent_id": 2 * ref_id + j, "img_id": img_id,
                                    "sent": TEMPLATES[k].format(c=color, s=shape), "gt_box": box, "split": split})
                ref_id += 1
        write_json(out / "refcoco" / f"{split}.json", records)
        counts[f"refcoco/{split}.json"] = len(records)
    (out / SYNTHETIC_FEATURES).parent.mkdir(parents=True, exist_ok=True)
    write_tsv(out / SYNTHETIC_FEATURES, images)
    counts[SYNTHETIC_FEATURES] = len(images)
    return counts
