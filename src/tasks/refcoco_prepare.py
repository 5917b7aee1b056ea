"""Build ``data/<dataset>/<split>.json`` for RefCOCO, RefCOCO+ or RefCOCOg from the public release.

The release (the refer toolkit's layout) has, per dataset, ``refs(unc).p`` (RefCOCO, RefCOCO+) or ``refs(umd).p``
(RefCOCOg), a pickled list of refs ``{"ref_id", "ann_id", "image_id", "split", "category_id", "file_name",
"sentences": [{"sent", "sent_id", "tokens", "raw"}], ...}``, and ``instances.json``, COCO's ``images``,
``annotations`` (``[{"id", "bbox": [x, y, w, h], "image_id", "category_id"}]``) and ``categories``. Every sentence
becomes one record::

    {"ref_id": 0, "sent_id": 0, "sent": "man in red", "img_id": "COCO_train2014_000000581857",
     "gt_box": [103.93, 299.99, 134.22, 177.42], "split": "testA"}

``gt_box`` is the box of the ref's ``ann_id`` in instances.json (pixels), ``img_id`` the COCO train2014 obj36 id.
The pickle is read without running anything: the unpickler refuses every global (a pickle can name any function
and have it called), so only plain containers, strings and numbers load.

    python -m tasks.refcoco_prepare --dataset refcoco+ --raw data/refcoco+/raw --out data

The records' format is here too: each dataset's splits, the COCO box check and the IoU of boxes.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lxrt.fileio import atomic_write_text
from tasks.answers import DataFormatError, load_json

UNC = ("train", "val", "testA", "testB")
SPLITS = {"refcoco": UNC, "refcoco+": UNC, "refcocog": ("train", "val", "test")}
"""Each dataset's splits (the unc split of RefCOCO and RefCOCO+, the umd split of RefCOCOg)."""
REFS_FILE = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}


def check_box(box: Any, where: str) -> list[float]:
    """A COCO ``[x, y, w, h]`` with w, h > 0, as floats; else ``DataFormatError`` naming ``where``."""
    if isinstance(box, list) and len(box) == 4 and all(type(v) in (int, float) for v in box) and min(box[2:]) > 0:
        return [float(v) for v in box]
    raise DataFormatError(f"{where}: box {box!r:.80} is not [x, y, w, h] (numbers, w and h > 0)")


def xyxy(xywh: Tensor) -> Tensor:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` over the last dimension."""
    return torch.cat([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], -1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``x1 y1 x2 y2`` boxes (areas w * h, as COCO), broadcast over the leading dimensions."""
    inter = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area = lambda x: (x[..., 2:] - x[..., :2]).clamp(min=0).prod(-1)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


class RefusedObject(pickle.UnpicklingError):
    """A pickle asks for something other than plain containers, strings and numbers."""


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that loads dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None, and
    nothing else: every global (a class or function a pickle may name, and have called) and every persistent
    id is refused before anything is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise RefusedObject(
            f"refused to load the global {module}.{name} (only plain containers, strings and numbers are read)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedObject(f"refused to load the persistent id {pid!r:.60}")


def load_plain_pickle(path: Path) -> Any:
    """The object pickled in ``path``, loaded with ``PlainUnpickler``; errors name the file."""
    data = Path(path).read_bytes()
    try:  # the release was pickled by Python 2: its byte strings are UTF-8 text
        return PlainUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except RefusedObject as err:
        raise DataFormatError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, MemoryError) as err:
        raise DataFormatError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


def field(obj: Any, key: str, kind: type, where: str) -> Any:
    """``obj[key]`` of type ``kind`` (bool is not a number here); else ``DataFormatError`` naming ``where``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(f"{where}: {key!r} is {value!r:.60}, expected {kind.__name__}")
    return value


def read_annotations(path: Path) -> dict[int, dict[str, Any]]:
    """``instances.json``: annotation id -> annotation."""
    data = load_json(path)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DataFormatError(f"{path}: expected an object with an 'annotations' list (COCO instances format)")
    return {field(ann, "id", int, f"{path}: annotation {i}"): ann for i, ann in enumerate(anns)}


def convert_ref(ref: Any, where: str, anns: dict[int, dict[str, Any]], splits: Sequence[str],
                instances: Path) -> list[dict[str, Any]]:
    """One ref -> one record per sentence; errors name the file and the ref."""
    ref_id = field(ref, "ref_id", int, where)
    where = f"{where} (ref_id {ref_id})"
    split, image_id, ann_id = (field(ref, k, t, where) for k, t in (("split", str), ("image_id", int), ("ann_id", int)))
    if split not in splits:
        raise DataFormatError(f"{where}: split {split!r}, expected one of {list(splits)}")
    if ann_id not in anns:
        raise DataFormatError(f"{where}: ann_id {ann_id} is not an annotation of {instances}")
    ann = anns[ann_id]
    if ann.get("image_id") != image_id:
        raise DataFormatError(f"{where}: image_id {image_id}, but annotation {ann_id} in {instances} is on image "
                              f"{ann.get('image_id')!r}")
    box = check_box(ann.get("bbox"), f"{instances}: annotation {ann_id} bbox")
    sentences = field(ref, "sentences", list, where)
    if not sentences:
        raise DataFormatError(f"{where}: no sentences")
    img_id = f"COCO_train2014_{image_id:012d}"
    return [{"ref_id": ref_id, "sent_id": field(s, "sent_id", int, f"{where} sentence {k}"),
             "sent": field(s, "sent", str, f"{where} sentence {k}"), "img_id": img_id, "gt_box": box, "split": split}
            for k, s in enumerate(sentences)]


def prepare(raw_dir: Path, out_root: Path, dataset: str) -> dict[str, int]:
    """Write ``out_root/<dataset>/<split>.json`` for every split; returns split -> expressions."""
    refs_path, instances = Path(raw_dir) / REFS_FILE[dataset], Path(raw_dir) / "instances.json"
    missing = [str(p) for p in (refs_path, instances) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{dataset} release files not found: {', '.join(missing)}")
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list):
        raise DataFormatError(f"{refs_path}: holds a {type(refs).__name__}, expected a list of refs")
    anns = read_annotations(instances)
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS[dataset]}
    seen: dict[int, int] = {}
    for index, ref in enumerate(refs):
        for rec in convert_ref(ref, f"{refs_path}: ref {index}", anns, SPLITS[dataset], instances):
            sent_id = rec["sent_id"]
            if sent_id in seen:
                raise DataFormatError(f"{refs_path}: ref {index}: sent_id {sent_id} is also in ref {seen[sent_id]}")
            seen[sent_id] = index
            by_split[rec["split"]].append(rec)
    folder = Path(out_root) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in by_split.items():
        atomic_write_text(folder / f"{split}.json", json.dumps(records))
    return {split: len(records) for split, records in by_split.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(SPLITS), required=True)
    p.add_argument("--raw", type=Path, required=True, help="folder of refs(unc).p or refs(umd).p and instances.json")
    p.add_argument("--out", type=Path, default=Path("data"), help="data root: writes <out>/<dataset>/<split>.json")
    args = p.parse_args(argv)
    try:
        counts = prepare(args.raw, args.out, args.dataset)
    except (FileNotFoundError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        print(f"{args.out / args.dataset / (split + '.json')}: {n} expressions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
