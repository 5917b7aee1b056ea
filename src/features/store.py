"""Memory-mapped region-feature store: the format, reading it, and finding the store of a TSV.

Layout of a store directory (every array is a plain ``.npy`` file, so ``np.load`` can read it):

    meta.json          format/version, counts, dtype, feat_dim, box counts, source (path/size/mtime)
    ids.txt            one image id per line, in insertion (TSV) order
    offsets.npy        (num_images + 1,) int64: regions of image i are rows offsets[i]:offsets[i+1]
    image_hw.npy       (num_images, 2) int64: img_h, img_w
    features.npy       (num_regions, D) float16 or float32
    boxes.npy          (num_regions, 4) float32, x1 y1 x2 y2 divided by img_w / img_h
    objects_id.npy ... (num_regions,) detector labels and confidences, when the source has them

``meta.json`` is written last and the directory is published with ``os.replace``, so a store that
is visible is complete. When every image has the same number of regions N, ``features.npy`` is also
viewed as (num_images, N, D) and a batch is one fancy-indexed read.

Writing a store is :mod:`features.store_writer`; converting a TSV, :mod:`features.convert`; opening
the store of a TSV and building it on first use, :func:`features.open_store` (:mod:`features.opening`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.tsv import normalize_topk
from lxrt.fileio import describe_file

FORMAT_NAME = "lxmert-feature-store"
FORMAT_VERSION = 1
META_FILE = "meta.json"
IDS_FILE = "ids.txt"
STORE_SUFFIX = ".store"
DTYPES = ("float16", "float32")
BOX_TOLERANCE = 1e-5  # the original asserts boxes lie in [0, 1] within this tolerance

# Optional per-region detector outputs and the dtype each is stored with (as in the TSV).
LABEL_FIELDS: dict[str, np.dtype] = {
    "objects_id": np.dtype("<i8"),
    "objects_conf": np.dtype("<f4"),
    "attrs_id": np.dtype("<i8"),
    "attrs_conf": np.dtype("<f4"),
}


class StoreError(RuntimeError):
    """A store that is missing, incomplete, stale, corrupt, or cannot be (re)built."""


class MissingImageError(KeyError):
    """An image id that the store does not hold."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


def normalize_boxes(boxes_px: np.ndarray, img_h: int, img_w: int, n: int, what: str) -> np.ndarray:
    """Pixel x1 y1 x2 y2 -> fractions of the image, computed in float32 like the original loader."""
    boxes = np.array(boxes_px, dtype=np.float32, copy=True)
    if boxes.shape != (n, 4):
        raise ValueError(f"{what}: boxes of shape {boxes.shape}, expected ({n}, 4)")
    boxes[:, (0, 2)] /= np.float32(img_w)
    boxes[:, (1, 3)] /= np.float32(img_h)
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes < -BOX_TOLERANCE).any(axis=1)
    bad |= (boxes > 1 + BOX_TOLERANCE).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what}: box {i} = {np.asarray(boxes_px)[i].tolist()} (pixels) lies outside the "
            f"{img_w}x{img_h} image ({int(bad.sum())} bad boxes; expected 0 <= x <= img_w, 0 <= y <= img_h)"
        )
    np.clip(boxes, 0.0, 1.0, out=boxes)
    return boxes


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class RegionFeatures:
    """The regions of one image; arrays are read-only views into the store."""

    features: np.ndarray  # (N, D) store dtype
    boxes: np.ndarray  # (N, 4) float32, normalized x1 y1 x2 y2
    img_h: int
    img_w: int
    objects_id: np.ndarray | None = None
    objects_conf: np.ndarray | None = None
    attrs_id: np.ndarray | None = None
    attrs_conf: np.ndarray | None = None

    @property
    def num_boxes(self) -> int:
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        return (
            f"RegionFeatures(num_boxes={self.num_boxes}, feat_dim={self.features.shape[1]}, "
            f"dtype={self.features.dtype}, img_h={self.img_h}, img_w={self.img_w})"
        )


def read_meta(path: Path) -> dict[str, Any]:
    """The validated ``meta.json`` of a store directory."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise StoreError(f"{path} is not a feature store (no {META_FILE}; an unfinished conversion?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{meta_path}: unreadable store metadata ({err}; it is {describe_file(meta_path)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{meta_path}: not a {FORMAT_NAME} metadata file")
    if meta.get("version") != FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: store format version {meta.get('version')}, this code reads version "
            f"{FORMAT_VERSION}; rebuild the store (python -m features.convert --force)"
        )
    missing = [k for k in ("num_images", "num_regions", "feat_dim", "dtype", "max_boxes") if k not in meta]
    if missing or meta["dtype"] not in DTYPES:
        raise StoreError(f"{meta_path}: incomplete metadata (missing {missing}, dtype {meta.get('dtype')!r})")
    return meta


class FeatureStore:
    """Read access to a store directory.

    Construction reads ``meta.json`` only; ids and arrays are loaded on first use, and arrays are
    memory-mapped per process (a pickled store carries no data, and after a fork the child maps
    the files again), so DataLoader workers share the page cache instead of copying features.
    """

    def __init__(self, path: str | os.PathLike, *, limit: int | None = None) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.feat_dim: int = int(self.meta["feat_dim"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.source: dict[str, Any] = dict(self.meta.get("source") or {})
        self._total = int(self.meta["num_images"])
        self._n = self._total if limit is None else max(0, min(int(limit), self._total))
        self._reset_lazy()

    def _reset_lazy(self) -> None:
        self._pid: int | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._feats3d: np.ndarray | None = None
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._box_range: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Only the path and metadata travel; the receiving process maps the files itself.
        state = self.__dict__.copy()
        state.update(_pid=None, _arrays={}, _feats3d=None, _ids=None, _index=None, _box_range=None)
        return state

    def __repr__(self) -> str:
        shown = f"{self._n} of {self._total}" if self._n != self._total else f"{self._n}"
        return (
            f"FeatureStore({str(self.path)!r}, images={shown}, feat_dim={self.feat_dim}, "
            f"dtype={self.dtype.name}, boxes={self.fixed_boxes or f'<= {self.max_boxes}'})"
        )

    # ---- ids -------------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Image ids in insertion (TSV) order."""
        if self._ids is None:
            text = (self.path / IDS_FILE).read_text(encoding="utf-8")
            ids = text.split("\n")
            if ids and ids[-1] == "":
                ids.pop()
            if len(ids) != self._total:
                raise StoreError(f"{self.path}: {IDS_FILE} holds {len(ids)} ids, meta says {self._total}")
            self._ids = ids[: self._n]
        return self._ids

    def __len__(self) -> int:
        return self._n

    def __contains__(self, img_id: object) -> bool:
        return img_id in self._id_index()

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _id_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {img_id: i for i, img_id in enumerate(self.ids)}
        return self._index

    def index(self, img_id: str) -> int:
        """Row of ``img_id``; ``MissingImageError`` (a KeyError) naming the store if absent."""
        try:
            return self._id_index()[img_id]
        except KeyError:
            scope = f"the first {self._n} of {self._total} images of" if self._n < self._total else "the"
            message = f"image id {img_id!r} is not in {scope} feature store {self.path}"
            raise MissingImageError(message) from None

    # ---- arrays ----------------------------------------------------------------------------------

    def _map(self) -> dict[str, np.ndarray]:
        if self._pid == os.getpid():
            return self._arrays
        names = ["features", "boxes", "offsets", "image_hw", *self.meta.get("labels", [])]
        regions = int(self.meta["num_regions"])
        expected = {
            "features": ((regions, self.feat_dim), self.dtype),
            "boxes": ((regions, 4), np.dtype(np.float32)),
            "offsets": ((self._total + 1,), np.dtype(np.int64)),
            "image_hw": ((self._total, 2), np.dtype(np.int64)),
            **{name: ((regions,), LABEL_FIELDS[name]) for name in LABEL_FIELDS},
        }
        arrays = {}
        for name in names:
            file = self.path / f"{name}.npy"
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as err:
                kind = f"; it is {describe_file(file)}" if file.is_file() else ""
                raise StoreError(f"{file}: cannot map store array ({err}{kind}); rebuild the store") from None
            shape, dtype = expected[name]
            if arr.shape != shape or arr.dtype != dtype:
                raise StoreError(
                    f"{file}: shape {arr.shape} {arr.dtype}, expected {shape} {dtype}; the store is "
                    "corrupt, rebuild it (python -m features.convert --force)"
                )
            arrays[name] = np.asarray(arr)  # plain ndarray views: slicing a np.memmap is slower
        fixed = self.meta.get("fixed_boxes")
        self._feats3d = arrays["features"].reshape(self._total, fixed, self.feat_dim) if fixed else None
        self._arrays = arrays
        self._pid = os.getpid()
        return arrays

    def _boxes_range(self) -> tuple[int, int]:
        if self._box_range is None:
            if self._n == self._total:
                self._box_range = (int(self.meta.get("min_boxes") or 0), int(self.meta["max_boxes"]))
            elif self._n == 0:
                self._box_range = (0, 0)
            else:
                counts = np.diff(self._map()["offsets"][: self._n + 1])
                self._box_range = (int(counts.min()), int(counts.max()))
        return self._box_range

    @property
    def max_boxes(self) -> int:
        return self._boxes_range()[1]

    @property
    def fixed_boxes(self) -> int | None:
        """N when every image has N regions (36 for the released TSVs), else None."""
        if self.meta.get("fixed_boxes"):
            return int(self.meta["fixed_boxes"])
        lo, hi = self._boxes_range()
        return hi if lo == hi and hi > 0 else None

    @property
    def labels(self) -> list[str]:
        """Names of the detector outputs the store holds (objects_id, objects_conf, ...)."""
        return list(self.meta.get("labels", []))

    def get(self, img_id: str) -> RegionFeatures:
        """All regions of one image, as read-only views (no copy)."""
        row = self.index(img_id)
        arrays = self._map()
        start, end = (int(x) for x in arrays["offsets"][row : row + 2])
        img_h, img_w = (int(x) for x in arrays["image_hw"][row])
        labels = {name: arrays[name][start:end] for name in self.labels}
        return RegionFeatures(
            features=arrays["features"][start:end],
            boxes=arrays["boxes"][start:end],
            img_h=img_h,
            img_w=img_w,
            **labels,
        )

    def gather(
        self,
        img_ids: Sequence[str],
        num_boxes: int | None = None,
        dtype: np.dtype | type | str | None = np.float32,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Features (B, N, D), boxes (B, N, 4) and visual mask (B, N) int64 for a batch of images.

        N is ``num_boxes`` or the largest region count in the batch; images with more regions keep
        their first N, shorter ones are zero-padded. The mask is None when no row is padded.
        ``dtype`` None keeps the store dtype (the fastest path; cast on the accelerator instead).
        """
        rows = np.fromiter((self.index(i) for i in img_ids), dtype=np.int64, count=len(img_ids))
        out_dtype = self.dtype if dtype is None else np.dtype(dtype)
        if num_boxes is not None and num_boxes < 1:
            raise ValueError(f"num_boxes must be >= 1, got {num_boxes}")
        arrays = self._map()
        fixed = self.fixed_boxes
        if fixed is not None and (num_boxes is None or num_boxes <= fixed) and self._feats3d is not None:
            n = fixed if num_boxes is None else num_boxes
            boxes = arrays["boxes"].reshape(self._total, fixed, 4)[rows, :n]
            if out_dtype == self.dtype:
                feats = self._feats3d[rows, :n] if n < fixed else self._feats3d[rows]
            else:  # cast row by row: avoids a second batch-sized temporary
                feats = np.empty((len(rows), n, self.feat_dim), dtype=out_dtype)
                for i, r in enumerate(rows):
                    feats[i] = self._feats3d[r, :n]
            return feats, boxes, None
        return self._gather_padded(rows, num_boxes, out_dtype, arrays)

    def _gather_padded(
        self, rows: np.ndarray, num_boxes: int | None, out_dtype: np.dtype, arrays: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        offsets = arrays["offsets"]
        starts, ends = offsets[rows], offsets[rows + 1]
        counts = ends - starts
        if num_boxes is not None:
            n = int(num_boxes)
        else:
            n = int(counts.max()) if len(rows) else 0
        feats = np.zeros((len(rows), n, self.feat_dim), dtype=out_dtype)
        boxes = np.zeros((len(rows), n, 4), dtype=np.float32)
        mask = np.zeros((len(rows), n), dtype=np.int64)
        for i, (s, c) in enumerate(zip(starts.tolist(), counts.tolist())):
            k = min(c, n)
            feats[i, :k] = arrays["features"][s : s + k]
            boxes[i, :k] = arrays["boxes"][s : s + k]
            mask[i, :k] = 1
        return feats, boxes, (None if mask.all() else mask)

    def subset(self, topk: int | None) -> FeatureStore:
        """A view restricted to the first ``topk`` images (``None`` / negative: this store)."""
        limit = normalize_topk(topk)
        if limit is None or limit >= self._n:
            return self
        return FeatureStore(self.path, limit=limit)


# --------------------------------------------------------------------------------------------------
# Finding and checking the store of a TSV


def store_path_for(tsv_path: str | os.PathLike, topk: int | None = None) -> Path:
    """``x/train2014_obj36.tsv`` -> ``x/train2014_obj36.store`` (``.top512.store`` for a topk store)."""
    tsv_path = Path(tsv_path)
    stem = tsv_path.stem if tsv_path.suffix == ".tsv" else tsv_path.name
    limit = normalize_topk(topk)
    tag = f".top{limit}" if limit is not None else ""
    return tsv_path.with_name(f"{stem}{tag}{STORE_SUFFIX}")


def tsv_source(tsv_path: str | os.PathLike, topk: int | None = None) -> dict[str, Any]:
    """The ``source`` record of a store built from (the first ``topk`` lines of) a TSV."""
    st = os.stat(tsv_path)
    return {
        "kind": "obj36-tsv",
        "path": str(Path(tsv_path).resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "topk": normalize_topk(topk),
    }


def store_status(
    store_dir: str | os.PathLike, tsv_path: str | os.PathLike, dtype: str = "float16", topk: int | None = None
) -> str | None:
    """None if ``store_dir`` is a complete store of this TSV's current version with these settings,
    else the reason it is not (missing, stale, other dtype, unreadable)."""
    store_dir = Path(store_dir)
    if not store_dir.exists():
        return "missing"
    try:
        meta = read_meta(store_dir)
    except StoreError as err:
        return f"unusable ({err})"
    source = meta.get("source") or {}
    current = tsv_source(tsv_path, topk)
    if source.get("size") != current["size"] or source.get("mtime_ns") != current["mtime_ns"]:
        return f"stale: {tsv_path} changed since the store was built (size or modification time differ)"
    if source.get("topk") != current["topk"]:
        return f"built from the first {source.get('topk')} lines, {current['topk']} wanted"
    if meta["dtype"] != dtype:
        return f"built with dtype {meta['dtype']}, {dtype} requested"
    return None
