"""Resumable, verified downloads over http(s)://, s3:// and file:// (``download``).

Bytes stream into ``<dest>.part`` with running digests; an interrupted transfer resumes from there
(HTTP Range with If-Range, S3 ranged GET with IfMatch) when the remote file is unchanged. Size and
checksums are verified, the file is fsynced and only then renamed to ``dest``: ``dest`` is either
absent or complete. Failures that may pass are retried with backoff, except a host that could not
be reached at all, which fails at once; every file has an overall deadline. Needs only the standard
library, requests, tqdm and (for s3:// only) boto3, so a copy of ``lxrt`` downloads on its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from .fileio import atomic_write_text, fsync_dir
from .progress import progress_bar
from .remote import CHUNK, Body, DownloadError, Transient, Transport, make_s3_client, open_transport

__all__ = [
    "CHUNK",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "NETWORK_HINT",
    "DownloadError",
    "download",
    "file_digests",
    "make_s3_client",
    "remote_size",
]

DEFAULT_TIMEOUT = 60.0
"""Seconds without an answer (or without a byte) before a server counts as no longer answering."""
DEFAULT_DEADLINE = 4 * 3600.0
"""Seconds one file may take, retries included; the bytes received are kept for the next run."""
NETWORK_HINT = (
    "downloads need network access: check the connection and proxy settings, "
    "or fetch from a reachable mirror"
)
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------
# The partial file


class PartFile:
    """``<dest>.part`` opened for appending, locked against a second writer, with running digests."""

    def __init__(self, path: Path, algorithms: Iterable[str]) -> None:
        self.path = path
        self._algorithms = sorted(algorithms)
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in finish()/close()
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise DownloadError(f"{path} is being written by another download; wait for it to finish") from None
        self._new_digests()

    def _new_digests(self) -> None:
        self._digests = {a: hashlib.new(a) for a in self._algorithms}
        self._hashed = 0

    @property
    def size(self) -> int:
        return self._fh.tell()

    def reset(self) -> None:
        self._fh.truncate(0)
        self._fh.seek(0)
        self._new_digests()

    def _catch_up(self) -> None:
        # Bytes kept from an earlier run are hashed once, before new bytes are appended.
        if self._hashed == self.size:
            return
        self._fh.flush()
        with open(self.path, "rb") as fh:
            fh.seek(self._hashed)
            while self._hashed < self.size:
                block = fh.read(min(CHUNK, self.size - self._hashed))
                if not block:
                    break
                for d in self._digests.values():
                    d.update(block)
                self._hashed += len(block)

    def write(self, chunk: bytes) -> None:
        self._catch_up()
        self._fh.write(chunk)
        for d in self._digests.values():
            d.update(chunk)
        self._hashed += len(chunk)

    def finish(self) -> dict[str, str]:
        """Flush to disk, release the file and return the hex digests of its whole content."""
        self._catch_up()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.close()
        return {a: d.hexdigest() for a, d in self._digests.items()}

    def discard_if_empty(self, meta_path: Path) -> bool:
        """Remove the partial file (and its record) when no byte was ever received: nothing to resume."""
        if self._fh.closed or self.size:
            return False
        self.path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created, innermost first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------
# Hashing what is on disk


def file_digests(path: str | os.PathLike[str], algorithms: Iterable[str] = ("sha256",),
                 progress: bool = True) -> dict[str, str]:
    """Hex digests of the file at ``path`` (``{"sha256": ...}``), with a progress bar."""
    path = Path(path)
    digests = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh, progress_bar(path.stat().st_size, f"verify {path.name}", unit="B",
                                              enabled=progress) as bar:
        for block in iter(lambda: fh.read(CHUNK), b""):
            for d in digests.values():
                d.update(block)
            bar.update(len(block))
    return {a: d.hexdigest() for a, d in digests.items()}


def _mismatch(size: int, digests: dict[str, str], expected: dict[str, str], expected_size: int | None) -> str | None:
    """What about a file of ``size`` bytes and ``digests`` differs from the expectations (None: nothing)."""
    if expected_size is not None and size != expected_size:
        return f"expected {expected_size} bytes, got {size}"
    for algo, want in expected.items():
        if digests[algo] != want:
            return f"expected {algo} {want}, got {digests[algo]}"
    return None


# ----------------------------------------------------------------------------------------------------
# Filling the partial file


@dataclass
class _Attempts:
    """How hard to try: retries with exponential backoff, a read timeout and an overall deadline."""

    retries: int
    backoff: float
    timeout: float
    deadline: float | None
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        if not self.deadline:
            return math.inf
        return self.started + self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _kept(part: PartFile) -> str:
    if part.size:
        return f"{part.size} bytes are kept in {part.path}, run again to resume"
    return "nothing was received"


def _past_deadline(url: str, part: PartFile, total: int | None, tries: _Attempts) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"{url} did not finish within its deadline of {tries.deadline:g} s ({part.size}{of} bytes after "
        f"{tries.elapsed():.0f} s); {_kept(part)}, or allow it more time",
        reason="deadline",
    )


def _copy_body(body: Body, part: PartFile, url: str, tries: _Attempts, label: str, progress: bool) -> None:
    with progress_bar(body.total, label, unit="B", enabled=progress, initial=part.size) as bar:
        for chunk in body.chunks:
            part.write(chunk)
            bar.update(len(chunk))
            if tries.left() <= 0:
                raise _past_deadline(url, part, body.total, tries)


def _fill_part(transport: Transport, url: str, part: PartFile, meta_path: Path, tries: _Attempts,
               progress: bool, label: str) -> None:
    """Bring ``part`` to the complete remote content, resuming and retrying transient failures."""
    meta = _read_json(meta_path)
    if part.size and (meta is None or meta.get("url") != url):
        # Bytes without a record of their source cannot be trusted to be a prefix of this file.
        part.reset()
        meta = None
    connected = False
    for attempt in range(tries.retries + 1):
        total = meta.get("total") if meta else None
        if total is not None and part.size == total:
            return
        if total is not None and part.size > total:
            part.reset()
        if tries.left() <= 0:
            raise _past_deadline(url, part, total, tries)
        offset = part.size
        try:
            # The read timeout never runs past the deadline.
            body = transport.open(offset, meta.get("version") if meta and offset else None,
                                  max(0.1, min(tries.timeout, tries.left())))
            connected = True
            try:
                if body.start != offset:
                    log.info("%s: the server cannot resume at byte %d, starting over", label, offset)
                    part.reset()
                elif offset:
                    log.info("%s: resuming at byte %d", label, offset)
                if body.start == 0 or meta is None:
                    meta = {"url": url, "total": body.total, "version": body.version}
                    atomic_write_text(meta_path, json.dumps(meta))
                elif body.total != total:
                    part.reset()
                    meta = None
                    raise Transient(f"{url} changed size while resuming")
                _copy_body(body, part, url, tries, label, progress)
            finally:
                body.close()
            if body.total is not None and part.size != body.total:
                raise Transient(f"connection closed after {part.size} of {body.total} bytes")
            return
        except Transient as err:
            if tries.left() <= 0:
                raise _past_deadline(url, part, total, tries) from err
            if err.unreachable and not connected:
                # Nothing answered at all: more attempts would only make an offline user wait.
                kept = f"; {_kept(part)}" if part.size else ""
                raise DownloadError(f"cannot download {url}: {err}{kept}; {NETWORK_HINT}",
                                    reason="unreachable") from err
            if attempt == tries.retries:
                raise DownloadError(
                    f"download of {url} failed after {attempt + 1} attempt(s): {err}; {_kept(part)}"
                ) from err
            wait = min(tries.backoff * 2**attempt, max(0.0, tries.left()))
            log.warning("%s: %s; retrying in %.1fs", label, err, wait)
            time.sleep(wait)


# ----------------------------------------------------------------------------------------------------
# The API


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    md5: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
    s3_client: Any = None,
    backoff: float = 1.0,
    digests_out: dict[str, Any] | None = None,
    deadline: float | None = DEFAULT_DEADLINE,
) -> Path:
    """Fetch ``url`` (http(s)://, s3://bucket/key or file://) to ``dest`` and return ``dest``.

    An existing ``dest`` that matches the given size/checksums is kept without any request (with
    neither given, any existing ``dest`` counts as done; with a checksum, it is hashed first). Bytes
    go to ``<dest>.part``, which a later call resumes when the remote file is unchanged; failures
    that may pass are retried ``retries`` times with exponential ``backoff`` (a host that cannot be
    reached at all is not retried). ``timeout``: seconds a server may stay silent; ``deadline``:
    seconds the whole file may take (None or 0: no limit), after which the bytes received are kept.
    A checksum or size mismatch raises ``DownloadError`` and leaves the bytes in
    ``<dest>.part-bad``; ``dest`` only ever appears complete, and no empty ``.part`` is left behind.
    ``digests_out`` receives ``sha256`` and ``size`` of the file whenever they were computed (a
    completed transfer, or a kept ``dest`` that was hashed), and nothing otherwise.
    """
    dest = Path(dest)
    expected = {a: h.strip().lower() for a, h in (("sha256", sha256), ("md5", md5)) if h}
    if dest.is_dir():
        raise DownloadError(f"destination {dest} is a directory, expected a file path")
    if dest.exists():
        size = dest.stat().st_size
        got: dict[str, str] = {}
        if expected and (expected_size is None or size == expected_size):
            got = file_digests(dest, expected, progress)
        problem = _mismatch(size, got, expected, expected_size)
        if problem is None:
            log.info("%s: already present", dest)
            if digests_out is not None and "sha256" in got:
                digests_out.update(sha256=got["sha256"], size=size)
            return dest
        log.warning("%s exists but does not match (%s); downloading again", dest, problem)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part_path = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    transport = open_transport(url, session, s3_client, timeout)
    try:
        part = PartFile(part_path, {*expected, "sha256"})
        try:
            _fill_part(transport, url, part, meta_path, _Attempts(retries, backoff, timeout, deadline),
                       progress, dest.name)
            digests = part.finish()
        except BaseException:
            if part.discard_if_empty(meta_path):
                _remove_empty(created)
            raise
        finally:
            part.close()
    finally:
        transport.close()
    size = part_path.stat().st_size
    problem = _mismatch(size, digests, expected, expected_size)
    if problem is not None:
        bad = dest.with_name(dest.name + ".part-bad")
        os.replace(part_path, bad)
        meta_path.unlink(missing_ok=True)
        raise DownloadError(
            f"verification failed for {url}: {problem}; the bytes were kept in {bad} and not published to {dest}"
        )
    os.replace(part_path, dest)
    meta_path.unlink(missing_ok=True)
    fsync_dir(dest.parent)
    if digests_out is not None:
        digests_out.update(sha256=digests["sha256"], size=size)
    return dest


def remote_size(url: str, timeout: float = DEFAULT_TIMEOUT, session: requests.Session | None = None,
                s3_client: Any = None) -> int | None:
    """The size the server gives for ``url`` now (Content-Length, S3 ContentLength, file size), or None."""
    transport = open_transport(url, session, s3_client, timeout)
    try:
        body = transport.open(0, None, timeout)
        body.close()
        return body.total
    except Transient as err:
        raise DownloadError(f"cannot ask {url} for its size: {err}",
                            reason="unreachable" if err.unreachable else None) from err
    finally:
        transport.close()
