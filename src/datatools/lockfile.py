"""``download.lock.json`` beside the data: size, SHA-256 and modification time of every file a
download completed.

A file on disk is only known to be whole if it matches its record; ``--verify`` re-checks every
recorded file (and the server's current size) and fetches again what does not match. ``trusts``
is the cheap check: the file is the one recorded (same size and modification time) with the
expected SHA-256, so it need not be hashed again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from lxrt.fileio import atomic_write_text

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

    def record(self, key: str, file: Path, sha256: str, url: str, **extra: Any) -> None:
        """Record ``file`` (its size and modification time now) as the completed download of ``key``."""
        st = file.stat()
        self.files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256, "url": url,
                           "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        self.save()

    def trusts(self, key: str, file: Path, sha256: str) -> bool:
        """Whether ``file`` is, by its record, the completed download of ``key`` with SHA-256 ``sha256``:
        recorded with that digest, and still of the recorded size and modification time."""
        rec = self.files.get(key)
        if rec is None or rec.get("sha256") != sha256.strip().lower():
            return False
        try:
            st = file.stat()
        except OSError:
            return False
        return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns

    def forget(self, key: str) -> None:
        if self.files.pop(key, None) is not None:
            self.save()

    def save(self) -> None:
        text = json.dumps({"format": "lxmert-download-lock", "version": 1, "files": self.files},
                          indent=1, sort_keys=True)
        atomic_write_text(self.path, text + "\n")
