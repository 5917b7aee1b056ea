"""Fetch the files of the manifest (``datatools.sources``) into ``data/`` and ``snap/``.

``fetch_source`` downloads one entry with ``lxrt.fetch.download``, unpacks archives, and records
each completed file in ``download.lock.json``; ``verify_source`` re-checks files on disk against
those records and the server.

What "already there" trusts: an entry whose SHA-256 the manifest pins is trusted without hashing
only when its lock record says it is the file that was verified (same SHA-256, size and
modification time); any other copy (no record, a record that differs, a file changed since) is
hashed, kept and recorded when it matches, fetched again when it does not. An entry without a
pinned SHA-256 is trusted as is (and its size checked when the manifest knows it); ``--verify``
re-checks it against its record.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from datatools import sources as manifest
from datatools.archives import extract
from datatools.lockfile import DownloadLock
from lxrt.fetch import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, DownloadError, download, file_digests, remote_size
from lxrt.fileio import fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchConfig:
    """Where manifest files go and how they are fetched."""

    data_root: Path = Path("data")
    snap_root: Path = Path("snap")
    base_url: str | None = None
    keep_archives: bool = False
    retries: int = 3
    timeout: float = DEFAULT_TIMEOUT
    progress: bool = True
    deadline: float | None = DEFAULT_DEADLINE


def outputs_of(entry: manifest.Source, cfg: FetchConfig) -> list[Path]:
    """The local files ``entry`` provides (the unpacked members of an archive, else the file itself)."""
    return [manifest.resolve(o, cfg.data_root, cfg.snap_root) for o in entry.outputs or (entry.dest,)]


def verify_source(
    entry: manifest.Source, cfg: FetchConfig, lock: DownloadLock, session: requests.Session | None = None
) -> list[str]:
    """What is wrong with ``entry``'s files on disk (empty: each matches its lock record, and the
    server still offers the size that was downloaded)."""
    problems = []
    keys = entry.outputs or (entry.dest,)
    for key, out in zip(keys, outputs_of(entry, cfg)):
        rec = lock.get(key)
        if not out.is_file():
            problems.append(f"{out}: missing")
        elif rec is None:
            problems.append(f"{out}: no record of a completed download in {lock.path}")
        elif out.stat().st_size != rec["size"]:
            problems.append(f"{out}: {out.stat().st_size} bytes on disk, {rec['size']} when downloaded")
        elif file_digests(out, ["sha256"], cfg.progress)["sha256"] != rec["sha256"]:
            problems.append(f"{out}: SHA-256 differs from the one recorded when it was downloaded")
    fetched = lock.get(entry.dest)
    url = entry.url_from(cfg.base_url)
    if not problems and fetched is not None:
        now = remote_size(url, cfg.timeout, session)
        if now is not None and now != fetched["size"]:
            problems.append(f"{url} now has {now} bytes, the downloaded copy had {fetched['size']}")
    return problems


def _forget(entry: manifest.Source, cfg: FetchConfig, lock: DownloadLock) -> None:
    for key, out in zip(entry.outputs or (entry.dest,), outputs_of(entry, cfg)):
        out.unlink(missing_ok=True)
        lock.forget(key)
    manifest.resolve(entry.dest, cfg.data_root, cfg.snap_root).unlink(missing_ok=True)
    lock.forget(entry.dest)


def _unpack(entry: manifest.Source, cfg: FetchConfig, lock: DownloadLock, dest: Path, url: str) -> None:
    """Move the members ``entry`` names out of the archive ``dest`` to their places, and record them."""
    outputs = outputs_of(entry, cfg)
    staging = dest.with_name(f".{dest.name}.unpacked")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(dest, staging, progress=cfg.progress)
    except DownloadError as err:
        raise DownloadError(f"{err}; delete {dest} to download it again") from err
    try:
        found = {p.name: p for p in staging.rglob("*") if p.is_file()}
        for out in outputs:
            # The released zips differ in their inner folder layout; the member is found by name.
            if out.name not in found:
                raise DownloadError(
                    f"{dest} (from {url}) has no member named {out.name}; it contains: "
                    f"{', '.join(sorted(found)) or 'nothing'}"
                )
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(found[out.name], out)
            fsync_dir(out.parent)
        for key, out in zip(entry.outputs, outputs):
            lock.record(key, out, file_digests(out, ["sha256"], cfg.progress)["sha256"], url, archive=entry.dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_source(
    entry: manifest.Source,
    cfg: FetchConfig,
    session: requests.Session | None = None,
    lock: DownloadLock | None = None,
    verify: bool = False,
) -> list[Path]:
    """Download one manifest entry (and unpack it, for archives); returns the files it provides.

    Each completed file is recorded (size, modification time, SHA-256) in ``download.lock.json``
    beside the data. ``verify`` re-checks files already there against those records and the server,
    and fetches again what does not match.
    """
    lock = lock if lock is not None else DownloadLock.beside(cfg.data_root)
    outputs = outputs_of(entry, cfg)
    dest = manifest.resolve(entry.dest, cfg.data_root, cfg.snap_root)
    if verify and any(p.exists() for p in outputs):
        problems = verify_source(entry, cfg, lock, session)
        if not problems:
            log.info("%s: verified", entry.name)
            return outputs
        log.warning("%s: %s; fetching it again", entry.name, "; ".join(problems))
        _forget(entry, cfg, lock)
    if entry.archive and all(p.is_file() for p in outputs):
        log.info("%s: already unpacked", entry.name)
        return outputs
    if entry.sha256 and lock.trusts(entry.dest, dest, entry.sha256):
        log.info("%s: already there (as recorded in %s)", entry.name, lock.path)
        return outputs
    url = entry.url_from(cfg.base_url)
    fetched: dict[str, Any] = {}
    download(
        url,
        dest,
        sha256=entry.sha256,
        expected_size=entry.size,
        progress=cfg.progress,
        retries=cfg.retries,
        timeout=cfg.timeout,
        session=session,
        digests_out=fetched,
        deadline=cfg.deadline,
    )
    if fetched:
        lock.record(entry.dest, dest, fetched["sha256"], url)
    if not entry.archive:
        return outputs
    _unpack(entry, cfg, lock, dest, url)
    if not cfg.keep_archives:
        dest.unlink()
    return outputs
