"""The original code's ``load_obj_tsv``, reading through the memory-mapped feature store.

The original decodes a whole obj36 TSV into RAM (~38 GB for VQA). Here the TSV is converted once
into its feature store (the one the project's tasks use, ``X_obj36.store/`` next to the TSV) and
each returned dict reads its image's regions from the store: the list costs a few hundred bytes
per image, and the region arrays are produced when a key is read. A fork of the original switches
with one line in its ``utils.py``: ``from features.obj_tsv import load_obj_tsv``.
(:func:`lxrt.utils.load_obj_tsv` is the original's own, decoding everything into RAM.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from features.opening import open_store
from features.store import DTYPES, store_path_for, store_status
from features.tsv import FIELDNAMES

_LAZY = ("boxes", "features")


def pixel_boxes(norm: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    """Pixel boxes (N, 4) float32 from the store's normalized ones.

    The float32 product is what the original's ``boxes[:, (0, 2)] /= img_w; boxes[:, (1, 3)] /= img_h``
    turns back into exactly ``norm`` (a float32 quotient times its divisor, rounded to float32, is
    a preimage of that quotient), so original-style code sees the store's boxes to the bit.
    """
    return norm * np.array([img_w, img_h, img_w, img_h], dtype=np.float32)


class ObjRecord(dict):
    """One image as the original's dict; ``boxes`` (pixels, float32) and ``features`` (float32) are
    read from the store on access, read-only like the original's arrays."""

    __slots__ = ("_store",)

    def __init__(self, store: Any, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self._store = store

    def _region(self, key: str) -> np.ndarray:
        regions = self._store.get(dict.__getitem__(self, "img_id"))
        if key == "features":
            out = regions.features if regions.features.dtype == np.float32 else regions.features.astype(np.float32)
        else:
            out = pixel_boxes(regions.boxes, regions.img_h, regions.img_w)
        out.setflags(write=False)
        return out

    def __missing__(self, key: str) -> np.ndarray:
        if key in _LAZY:
            return self._region(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in _LAZY or dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        yield from dict.__iter__(self)
        yield from _LAZY

    def __len__(self) -> int:
        return dict.__len__(self) + len(_LAZY)

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self)

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self[k] for k in self]

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return [(k, self[k]) for k in self]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - this is get itself

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self.items())

    def __reduce__(self) -> tuple[Any, ...]:
        return (ObjRecord, (self._store, dict(dict.items(self))))

    def __repr__(self) -> str:
        return f"ObjRecord({dict.__repr__(self)[:-1]}, 'boxes': <{self['num_boxes']}x4>, 'features': <lazy>}})"


def _store_dtype(path: Path) -> str:
    """The dtype of an up-to-date store of ``path`` (so that it is reused), else the tasks' float16."""
    if path.is_file():
        for dtype in DTYPES:
            if store_status(store_path_for(path), path, dtype) is None:
                return dtype
    return "float16"


def load_obj_tsv(fname: str | os.PathLike, topk: int | None = None, *, dtype: str | None = None) -> list[ObjRecord]:
    """The images of an obj36 TSV (or a store directory) as the original's list of dicts.

    Keys ``img_id`` (str), ``img_h``, ``img_w``, ``num_boxes`` (int), ``objects_id``, ``attrs_id``
    (int64), ``objects_conf``, ``attrs_conf`` (float32), ``boxes`` (N, 4) float32 pixels and
    ``features`` (N, D) float32. ``topk`` None or -1 reads every image, else the first ``topk``.
    The store is built on first use (float16 like the tasks' unless ``dtype="float32"``, which keeps
    the TSV's exact values); an up-to-date store of either dtype is reused.
    """
    start = time.time()
    path = Path(fname)
    print(f"Start to load Faster-RCNN detected objects from {fname}")
    store = open_store(path, topk=topk, dtype=dtype or _store_dtype(path))
    data = []
    for img_id in store.ids:
        regions = store.get(img_id)
        fields: dict[str, Any] = {"img_id": img_id, "img_h": regions.img_h, "img_w": regions.img_w}
        for name in FIELDNAMES[3:7]:
            if getattr(regions, name) is not None:
                fields[name] = getattr(regions, name)
        fields["num_boxes"] = regions.num_boxes
        data.append(ObjRecord(store, fields))
    print(f"Loaded {len(data)} images in file {fname} in {int(time.time() - start)} seconds.")
    return data
