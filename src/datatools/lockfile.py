"""``download.lock.json`` beside the data: size and SHA-256 of every file a download completed.

A file on disk is only known to be whole if it matches its record; ``--verify`` re-checks every
recorded file (and the server's current size) and fetches again what does not match.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from lxrt.fileio import atomic_write

LOCK_NAME = "download.lock.json"
log = logging.getLogger(__name__)


class DownloadLock:
    """The records of ``<data_root>/download.lock.json``, keyed by manifest destination (``data/vqa/train.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.files = dict(data["files"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("%s is unreadable (%s); its records are ignored and rewritten", path, err)

    @classmethod
    def beside(cls, data_root: Path) -> DownloadLock:
        return cls(Path(data_root) / LOCK_NAME)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.files.get(key)

    def record(self, key: str, size: int, sha256: str, url: str, **extra: Any) -> None:
        self.files[key] = {"size": size, "sha256": sha256, "url": url,
                           "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        self.save()

    def forget(self, key: str) -> None:
        if self.files.pop(key, None) is not None:
            self.save()

    def save(self) -> None:
        text = json.dumps({"format": "lxmert-download-lock", "version": 1, "files": self.files},
                          indent=1, sort_keys=True)
        atomic_write(self.path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
