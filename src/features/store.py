"""Memory-mapped region-feature store: written once (from a TSV or an extractor), read lazily.

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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.tsv import normalize_topk

FORMAT_NAME = "lxmert-feature-store"
FORMAT_VERSION = 1
META_FILE = "meta.json"
IDS_FILE = "ids.txt"
STORE_SUFFIX = ".store"
PARTIAL_SUFFIX = ".partial"
JOURNAL_FILE = "journal.json"
LOCK_FILE = "writer.lock"
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


# --------------------------------------------------------------------------------------------------
# Writing


class _NpyAppender:
    """A ``.npy`` file grown by appending rows; the header is written with the final shape on close.

    A fixed 128-byte header is reserved up front so rows can be streamed without a counting pass
    (128 keeps the data 64-byte aligned and fits any shape this store can have).
    """

    HEADER_BYTES = 128

    def __init__(
        self, path: Path, dtype: np.dtype | str, row_shape: tuple[int, ...] = (), resume_rows: int | None = None
    ) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        if resume_rows is None:
            self.rows = 0
            self._f = open(path, "wb")  # noqa: SIM115 - stays open across append() calls until close()
            self._f.write(b"\0" * self.HEADER_BYTES)
        else:  # continue a partial file: rows after the last checkpoint are cut off
            self.rows = int(resume_rows)
            self._f = open(path, "r+b")  # noqa: SIM115
            self._f.truncate(self.HEADER_BYTES + self.rows * self.row_bytes)
            self._f.seek(0, os.SEEK_END)

    @property
    def row_bytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.row_shape, dtype=np.int64))

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {arr.shape[1:]}, expected {self.row_shape}")
        self._f.write(arr.data)
        self.rows += arr.shape[0]

    def _header(self) -> bytes:
        shape = (self.rows, *self.row_shape)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        magic = np.lib.format.magic(1, 0)
        body_len = self.HEADER_BYTES - len(magic) - 2
        if len(text) + 1 > body_len:
            raise ValueError(f"{self.path.name}: shape {shape} does not fit the reserved npy header")
        return magic + struct.pack("<H", body_len) + (text.ljust(body_len - 1) + "\n").encode("latin1")

    def close(self) -> None:
        self._f.seek(0)
        self._f.write(self._header())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def discard(self) -> None:
        self._f.close()


def partial_path(out_dir: str | os.PathLike) -> Path:
    """Where a resumable writer keeps the unfinished store for ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


def _read_journal(tmp_dir: Path) -> dict[str, Any] | None:
    path = tmp_dir / JOURNAL_FILE
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable resume journal ({err}); delete {tmp_dir} to start again") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_leftovers(out_dir: Path) -> None:
    """Remove ``<store>.tmp-<pid>`` / ``.old-<pid>`` dirs left by killed writers of ``out_dir``."""
    if not out_dir.parent.is_dir():
        return
    for kind in ("tmp", "old"):
        for path in out_dir.parent.glob(f"{out_dir.name}.{kind}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                print(f"Removing leftover of an interrupted conversion: {path}", file=sys.stderr)
                shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished store into place; an older store there is replaced, never merged."""
    for _ in range(3):
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        try:
            os.replace(tmp_dir, out_dir)
        except OSError:
            if out_dir.exists():  # another writer published in between: move it aside and retry
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                continue
            raise
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise StoreError(f"could not publish {out_dir}: other processes keep replacing it")


class StoreWriter:
    """Streams images into a new store at ``out_dir`` (constant memory apart from the id set).

    Data goes to ``<out_dir>.tmp-<pid>``; ``close()`` publishes it atomically, leaving the
    context on an exception removes it and keeps any previous store untouched.

    With ``resumable=True`` the data goes to ``<out_dir>.partial`` instead, :meth:`checkpoint` records
    how much of it is complete, and an interrupted or failed run leaves it there: a new writer with
    the same settings continues after the last checkpoint (:attr:`resumed` says how many images were
    already done), one with other settings is refused.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        feat_dim: int,
        dtype: str = "float16",
        source: dict | None = None,
        resumable: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        if int(feat_dim) < 1:
            raise ValueError(f"feat_dim must be >= 1, got {feat_dim}")
        self.out_dir = Path(out_dir)
        self.feat_dim = int(feat_dim)
        self.dtype = np.dtype(dtype)
        self.source = dict(source or {})
        self.resumable = bool(resumable)
        self.extra: dict[str, Any] = {}  # caller state saved with every checkpoint and restored on resume
        self._lock_fd: int | None = None
        _remove_leftovers(self.out_dir)
        if self.resumable:
            self.tmp_dir = partial_path(self.out_dir)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._lock()
            journal = _read_journal(self.tmp_dir)
            if journal is None:  # nothing recorded yet: start from an empty folder
                for leftover in self.tmp_dir.iterdir():
                    if leftover.name != LOCK_FILE:
                        leftover.unlink()
        else:
            self.tmp_dir = self.out_dir.with_name(f"{self.out_dir.name}.tmp-{os.getpid()}")
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir.mkdir(parents=True)
            journal = None
        self._seen: dict[str, int] = {}
        self._done = False
        if journal is not None:
            self._resume(journal)
            return
        self._features = _NpyAppender(self.tmp_dir / "features.npy", self.dtype, (self.feat_dim,))
        self._boxes = _NpyAppender(self.tmp_dir / "boxes.npy", np.float32, (4,))
        self._offsets = _NpyAppender(self.tmp_dir / "offsets.npy", np.int64)
        self._image_hw = _NpyAppender(self.tmp_dir / "image_hw.npy", np.int64, (2,))
        self._labels: dict[str, _NpyAppender] | None = None  # decided by the first add()
        self._ids_file = open(self.tmp_dir / IDS_FILE, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._regions = 0
        self._min_boxes: int | None = None
        self._max_boxes = 0
        self._offsets.append(np.zeros(1, np.int64))
        self.resumed = 0

    # ---- resuming --------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"feat_dim": self.feat_dim, "dtype": self.dtype.name, "source": self.source}

    def _lock(self) -> None:
        fd = os.open(self.tmp_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another process is writing {self.tmp_dir}; wait for it or stop it first") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _resume(self, journal: dict[str, Any]) -> None:
        if journal.get("settings") != json.loads(json.dumps(self._settings(), default=str)):
            self._unlock()
            raise StoreError(
                f"{self.tmp_dir} holds a partial store made with other settings ({journal.get('settings')}); "
                f"continue it with the same options, or delete it to start again"
            )
        rows, images = int(journal["regions"]), int(journal["images"])
        self._features = _NpyAppender(self.tmp_dir / "features.npy", self.dtype, (self.feat_dim,), rows)
        self._boxes = _NpyAppender(self.tmp_dir / "boxes.npy", np.float32, (4,), rows)
        self._offsets = _NpyAppender(self.tmp_dir / "offsets.npy", np.int64, (), images + 1)
        self._image_hw = _NpyAppender(self.tmp_dir / "image_hw.npy", np.int64, (2,), images)
        names = journal.get("labels")
        self._labels = (
            None
            if names is None
            else {n: _NpyAppender(self.tmp_dir / f"{n}.npy", LABEL_FIELDS[n], (), rows) for n in names}
        )
        ids_path = self.tmp_dir / IDS_FILE
        with open(ids_path, "r+b") as f:
            f.truncate(int(journal["ids_bytes"]))
        ids = ids_path.read_text(encoding="utf-8").split("\n")[:-1]
        if len(ids) != images:
            raise StoreError(f"{self.tmp_dir}: journal says {images} images, {IDS_FILE} holds {len(ids)}")
        self._seen = {img_id: i for i, img_id in enumerate(ids)}
        self._ids_file = open(ids_path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._regions = rows
        self._min_boxes = journal.get("min_boxes")
        self._max_boxes = int(journal.get("max_boxes") or 0)
        self.extra = dict(journal.get("extra") or {})
        self.resumed = images

    def checkpoint(self) -> None:
        """Make everything added so far durable and record it, so a later writer can continue from here."""
        self._check_open()
        if not self.resumable:
            return
        for f in self._all_files():
            f.flush()
        self._ids_file.flush()
        os.fsync(self._ids_file.fileno())
        journal = {
            "settings": self._settings(),
            "images": len(self._seen),
            "regions": self._regions,
            "ids_bytes": self._ids_file.tell(),
            "labels": None if self._labels is None else list(self._labels),
            "min_boxes": self._min_boxes,
            "max_boxes": self._max_boxes,
            "extra": self.extra,
        }
        tmp = self.tmp_dir / (JOURNAL_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(journal, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.tmp_dir / JOURNAL_FILE)

    def __contains__(self, img_id: object) -> bool:
        return img_id in self._seen

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def num_regions(self) -> int:
        return self._regions

    def _check_open(self) -> None:
        if self._done:
            raise StoreError(f"writer for {self.out_dir} is already closed")

    def add(
        self,
        img_id: str,
        img_h: int,
        img_w: int,
        boxes_px: np.ndarray,
        features: np.ndarray,
        objects_id: np.ndarray | None = None,
        objects_conf: np.ndarray | None = None,
        attrs_id: np.ndarray | None = None,
        attrs_conf: np.ndarray | None = None,
    ) -> None:
        """Append one image: N >= 1 regions, pixel boxes (N, 4) x1 y1 x2 y2, features (N, D)."""
        self._check_open()
        what = f"image {img_id!r} (for {self.out_dir})"
        if not isinstance(img_id, str) or not img_id or any(c in img_id for c in "\t\r\n"):
            raise ValueError(f"{what}: image ids must be non-empty strings without tabs or line breaks")
        if img_id in self._seen:
            raise ValueError(f"{what}: duplicate image id (already added as image #{self._seen[img_id]})")
        if int(img_h) < 1 or int(img_w) < 1:
            raise ValueError(f"{what}: image size must be positive, got img_h={img_h} img_w={img_w}")
        feats = np.asarray(features)
        if feats.ndim != 2 or feats.shape[1] != self.feat_dim or feats.shape[0] < 1:
            raise ValueError(f"{what}: features of shape {feats.shape}, expected (N >= 1, {self.feat_dim})")
        n = feats.shape[0]
        boxes = normalize_boxes(boxes_px, int(img_h), int(img_w), n, what)

        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, with the image id
            stored = feats.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            peak = float(np.nanmax(np.abs(feats.astype(np.float64))))
            hint = " (beyond float16 range; convert with --dtype float32)" if np.isfinite(peak) else ""
            raise ValueError(f"{what}: features contain NaN or infinite values{hint}, max |x| = {peak:g}")

        given = {
            "objects_id": objects_id,
            "objects_conf": objects_conf,
            "attrs_id": attrs_id,
            "attrs_conf": attrs_conf,
        }
        labels = {name: self._label(name, v, n, what) for name, v in given.items() if v is not None}
        if self._labels is None:
            self._labels = {name: _NpyAppender(self.tmp_dir / f"{name}.npy", LABEL_FIELDS[name]) for name in labels}
        if set(labels) != set(self._labels):
            raise ValueError(
                f"{what}: gives detector outputs {sorted(labels)}, but earlier images gave {sorted(self._labels)}"
            )

        self._features.append(stored)
        self._boxes.append(boxes)
        for name, value in labels.items():
            self._labels[name].append(value)
        self._regions += n
        self._offsets.append(np.array([self._regions], np.int64))
        self._image_hw.append(np.array([[int(img_h), int(img_w)]], np.int64))
        self._ids_file.write(img_id + "\n")
        self._seen[img_id] = len(self._seen)
        self._min_boxes = n if self._min_boxes is None else min(self._min_boxes, n)
        self._max_boxes = max(self._max_boxes, n)

    @staticmethod
    def _label(name: str, value: np.ndarray, n: int, what: str) -> np.ndarray:
        arr = np.asarray(value).reshape(-1)
        if arr.shape[0] != n:
            raise ValueError(f"{what}: {name} has {arr.shape[0]} values, expected one per region ({n})")
        return arr.astype(LABEL_FIELDS[name], copy=False)

    def _all_files(self) -> list[_NpyAppender]:
        return [self._features, self._boxes, self._offsets, self._image_hw, *(self._labels or {}).values()]

    def abort(self, keep_partial: bool = True) -> None:
        """Stop writing; a previous store at ``out_dir`` stays as it was. A resumable writer keeps its
        partial store up to the last checkpoint (unless ``keep_partial`` is False), others drop it."""
        if self._done:
            return
        self._done = True
        for f in self._all_files():
            f.discard()
        self._ids_file.close()
        self._unlock()
        if not (self.resumable and keep_partial):
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def close(self) -> Path:
        """Finish the files, write ``meta.json`` and publish the store atomically; returns its path."""
        self._check_open()
        if not self._seen:
            self.abort()
            raise StoreError(f"no images were added; nothing to publish at {self.out_dir}")
        try:
            for f in self._all_files():
                f.close()
            self._ids_file.flush()
            os.fsync(self._ids_file.fileno())
            self._ids_file.close()
            fixed = self._min_boxes if self._min_boxes == self._max_boxes else None
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "num_images": len(self._seen),
                "num_regions": self._regions,
                "feat_dim": self.feat_dim,
                "dtype": self.dtype.name,
                "min_boxes": self._min_boxes,
                "max_boxes": self._max_boxes,
                "fixed_boxes": fixed,
                "labels": sorted(self._labels or {}),
                "boxes": "x1 y1 x2 y2 divided by img_w / img_h, within [0, 1]",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": self.source,
            }
            with open(self.tmp_dir / META_FILE, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1, default=str)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            for name in (JOURNAL_FILE, LOCK_FILE):
                (self.tmp_dir / name).unlink(missing_ok=True)
            _fsync_dir(self.tmp_dir)
            _publish(self.tmp_dir, self.out_dir)
        except BaseException:
            self._done = False
            self.abort(keep_partial=False)
            raise
        self._unlock()
        self._done = True
        return self.out_dir


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
        raise StoreError(f"{meta_path}: unreadable store metadata ({err})") from None
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
                raise StoreError(f"{file}: cannot map store array ({err}); rebuild the store") from None
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
# Finding, checking and building stores next to their TSVs


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


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Serialize builds in one data directory, so that e.g. all DDP ranks wait for one conversion."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process converting features in {directory} ...", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_store(
    tsv_path: str | os.PathLike,
    topk: int | None = None,
    dtype: str = "float16",
    rebuild: bool = False,
    progress: bool = True,
) -> FeatureStore:
    """Open the store of a TSV (restricted to its first ``topk`` images), building it if needed.

    A complete, up-to-date store next to the TSV is opened as is. A missing or stale one, or one
    built with another dtype, is (re)built with a progress bar. With ``topk`` and no usable full
    store, only the first ``topk`` lines are converted, into ``<name>.top<topk>.store``. A store
    directory may be passed instead of a TSV (e.g. features extracted from raw images).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    path = Path(tsv_path)
    limit = normalize_topk(topk)
    if path.is_dir():
        store = FeatureStore(path)
        if store.dtype.name != dtype:
            note = f"Note: {path} holds {store.dtype.name} features ({dtype} requested); using them as stored"
            print(note, file=sys.stderr)
        return store.subset(limit)

    full = store_path_for(path)
    if not path.is_file():
        if full.is_dir() and not rebuild:
            # The TSV may have been deleted after conversion to save disk space.
            print(f"Note: {path} not found; using the store built from it, {full}", file=sys.stderr)
            return FeatureStore(full).subset(limit)
        raise FileNotFoundError(f"no feature TSV at {path} (and no converted store at {full})")

    if not rebuild and store_status(full, path, dtype) is None:
        return FeatureStore(full).subset(limit)
    target = full if limit is None else store_path_for(path, limit)
    asked = time.time()
    with _build_lock(path.parent):
        # Another process (e.g. another DDP rank) may have built the store while this one waited.
        reason = store_status(target, path, dtype, limit)
        if rebuild and not (reason is None and (target / META_FILE).stat().st_mtime >= asked):
            reason = "rebuild requested"
        if reason is None:
            return FeatureStore(target)
        if not os.access(path.parent, os.W_OK):
            raise StoreError(
                f"feature store {target} is {reason}, and {path.parent} is not writable to rebuild it; "
                f"convert elsewhere (python -m features.convert {path} --out DIR) and pass DIR instead"
            )
        if reason != "missing":
            print(f"Rebuilding feature store {target}: {reason}", file=sys.stderr)
        from features.convert import convert_tsv  # convert builds on this module's writer

        convert_tsv(path, target, topk=limit, dtype=dtype, progress=progress)
    return FeatureStore(target)
