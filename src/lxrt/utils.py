"""The original code's ``utils.load_obj_tsv``: an obj36 feature TSV decoded into RAM, numpy only.

This is the original's behaviour, and it costs the original's memory: every image's arrays stay in
RAM, about 0.3 MB per image, ~38 GB for VQA's train and val features (and a copy in each
DataLoader worker that touches them). With this project's ``src`` on the path, use
``features.obj_tsv.load_obj_tsv`` instead: the same arguments and the same list of dicts, read
lazily from the memory-mapped feature store that the TSV is converted into once. This module needs
nothing but numpy, so it also works in a fork that copies ``lxrt/`` alone.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from typing import Any

import numpy as np

FIELDNAMES = [
    "img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
    "features",
]
_SIZES = ("img_h", "img_w", "num_boxes")
# The base64 fields: name -> (dtype, values per region; -1 for the feature width, which the data gives).
_ARRAYS: dict[str, tuple[type, int | None]] = {
    "objects_id": (np.int64, None),
    "objects_conf": (np.float32, None),
    "attrs_id": (np.int64, None),
    "attrs_conf": (np.float32, None),
    "boxes": (np.float32, 4),
    "features": (np.float32, -1),
}


def _decode(fields: list[bytes], where: str) -> dict[str, Any]:
    """One TSV line's fields as the original's dict; ``ValueError`` naming ``where`` for a bad field."""
    if len(fields) != len(FIELDNAMES):
        raise ValueError(f"{where}: {len(fields)} tab-separated fields, expected {len(FIELDNAMES)}: {FIELDNAMES}")
    raw = dict(zip(FIELDNAMES, fields))
    try:
        img_id = raw["img_id"].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: img_id is not UTF-8 text") from None
    where = f"{where} (img_id {img_id!r})"
    sizes = {}
    for name in _SIZES:
        try:
            sizes[name] = int(raw[name])
        except ValueError:
            raise ValueError(f"{where}: {name} must be an integer, got {raw[name][:20]!r}") from None
    n = sizes["num_boxes"]
    item: dict[str, Any] = {"img_id": img_id}
    for name in FIELDNAMES[1:]:
        if name in sizes:
            item[name] = sizes[name]
            continue
        dtype, width = _ARRAYS[name]
        shape = (n,) if width is None else (n, width)
        try:
            arr = np.frombuffer(base64.b64decode(raw[name]), dtype=dtype).reshape(shape)
        except (binascii.Error, ValueError):
            expected = f"{n} x D" if width == -1 else " x ".join(str(d) for d in shape)
            raise ValueError(
                f"{where}: field {name!r} is not base64 of {expected} {np.dtype(dtype).name} values (num_boxes {n})"
            ) from None
        arr.setflags(write=False)
        item[name] = arr
    return item


def load_obj_tsv(fname: str | os.PathLike, topk: int | None = None) -> list[dict[str, Any]]:
    """The images of an obj36 TSV as a list of dicts, all arrays decoded into RAM (the original's loader).

    Keys are ``FIELDNAMES`` in order: ``img_id`` (str), ``img_h``, ``img_w``, ``num_boxes`` (int),
    ``objects_id``, ``attrs_id`` (int64), ``objects_conf``, ``attrs_conf`` (float32), ``boxes`` (N, 4)
    float32 pixels and ``features`` (N, D) float32, read-only. ``topk`` None or -1 reads every line,
    else the first ``topk``. A malformed line is a ``ValueError`` naming the file, line and field.
    For the memory of large files see the module docstring (``features.obj_tsv.load_obj_tsv``).
    """
    start = time.time()
    print(f"Start to load Faster-RCNN detected objects from {fname}")
    data = []
    with open(fname, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line:  # the original's csv reader skips blank lines
                continue
            data.append(_decode(line.split(b"\t"), f"{fname}:{lineno}"))
            if topk is not None and len(data) == topk:
                break
    print(f"Loaded {len(data)} images in file {fname} in {int(time.time() - start)} seconds.")
    return data
