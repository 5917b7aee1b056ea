"""Opening the feature store of an obj36 TSV, converting the TSV on first use.

This sits above the store (:mod:`features.store`) and the converter (:mod:`features.conversion`): a
missing, stale or differently typed store next to the TSV is (re)built here, once per data folder
even when several processes (DDP ranks) ask at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from features.conversion import convert_tsv
from features.store import DTYPES, META_FILE, FeatureStore, StoreError, store_path_for, store_status
from features.tsv import normalize_topk


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
        convert_tsv(path, target, topk=limit, dtype=dtype, progress=progress)
    return FeatureStore(target)
