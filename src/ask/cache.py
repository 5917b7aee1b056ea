"""The regions of images already seen: a second question about the same picture skips the extractor.

Entries are keyed by a digest of the image's bytes (a file's bytes, or a picture's pixels) and the
extractor's settings, and hold the decoded picture and its regions. The cache is bounded in entries
and in bytes (pixels + features), least recently used out first, and safe to share between threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from features.extractors import Regions

MAX_ENTRIES = 32
MAX_BYTES = 512 << 20


@dataclass(frozen=True)
class CachedRegions:
    """A decoded picture (RGB, upright) and what the extractor found in it."""

    picture: Image.Image
    regions: Regions

    @property
    def nbytes(self) -> int:
        labels = getattr(self.regions, "labels", {})
        arrays = [np.asarray(self.regions.boxes), np.asarray(self.regions.features), *map(np.asarray, labels.values())]
        return self.picture.width * self.picture.height * 3 + sum(a.nbytes for a in arrays)


def image_digest(image: Any) -> str | None:
    """SHA-256 of what identifies ``image``: a file's bytes, a picture's mode, size and pixels, an array's
    dtype, shape and bytes. None for what cannot be read (the caller reports that when it decodes)."""
    h = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return None
        return "file:" + h.hexdigest()
    if isinstance(image, Image.Image):
        h.update(f"{image.mode}:{image.size}:".encode())
        h.update(image.tobytes())
        return "pixels:" + h.hexdigest()
    if isinstance(image, np.ndarray):
        h.update(f"{image.dtype}:{image.shape}:".encode())
        h.update(np.ascontiguousarray(image).tobytes())
        return "array:" + h.hexdigest()
    return None


def settings_key(name: str, options: Mapping[str, Any], *more: object) -> str:
    """A stable text for an extractor's settings. Plain values as they are; a file path with its size and
    modification time (new weights in the same file are other settings); other objects (a state dict, a
    config) by identity."""

    def value(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float)):
            return v
        if isinstance(v, (str, os.PathLike)):
            path = Path(v)
            if path.is_file():
                st = path.stat()
                return f"{path.resolve()}@{st.st_size}:{st.st_mtime_ns}"
            return str(v)
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        return f"<{type(v).__name__}@{id(v):x}>"

    return json.dumps([name, {k: value(v) for k, v in sorted(options.items())}, [value(m) for m in more]])


class RegionCache:
    """Least-recently-used :class:`CachedRegions` by key, at most ``max_entries`` and ``max_bytes``."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[CachedRegions, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[str, str]) -> CachedRegions | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: tuple[str, str], entry: CachedRegions) -> None:
        size = entry.nbytes
        if size > self.max_bytes or self.max_entries < 1:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (entry, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
