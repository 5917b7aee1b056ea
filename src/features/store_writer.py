"""Writing a feature store: rows streamed into ``.npy`` files, published atomically, resumable.

The format is described in :mod:`features.store`. A writer fills ``<store>.tmp-<pid>`` (or, when
resumable, ``<store>.partial`` with a journal of what is complete) and moves the finished folder into
place with ``os.replace``, so a store that is visible is complete.
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
from pathlib import Path
from typing import Any

import numpy as np

from features.store import (
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    IDS_FILE,
    LABEL_FIELDS,
    META_FILE,
    StoreError,
    normalize_boxes,
)
from lxrt.fileio import atomic_write_text, fsync_dir

PARTIAL_SUFFIX = ".partial"
JOURNAL_FILE = "journal.json"
LOCK_FILE = "writer.lock"


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
        fsync_dir(out_dir.parent)
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
        for stray in self.tmp_dir.glob(f".{JOURNAL_FILE}.*"):  # the temporary file of a killed checkpoint
            stray.unlink()
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
        atomic_write_text(self.tmp_dir / JOURNAL_FILE, json.dumps(journal, default=str))

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
            # Only finite values that the cast made infinite are a range problem; NaN or inf given are not.
            hint = " (beyond float16 range; convert with --dtype float32)" if np.isfinite(feats).all() else ""
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
        # Closing a file flushes its buffer, which fails again on a full disk: the folder goes anyway.
        for f in self._all_files():
            with contextlib.suppress(OSError):
                f.discard()
        with contextlib.suppress(OSError):
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
            fsync_dir(self.tmp_dir)
            _publish(self.tmp_dir, self.out_dir)
        except BaseException:
            self._done = False
            self.abort(keep_partial=False)
            raise
        self._unlock()
        self._done = True
        return self.out_dir
