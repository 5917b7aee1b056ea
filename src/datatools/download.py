"""Fetch files over http(s)://, s3:// or file:// with resume, checksums and atomic publish; unpack archives.

``download`` streams into ``<dest>.part`` (resuming it when the server allows), verifies size and
checksums, fsyncs and only then renames the file to ``dest``, so ``dest`` is either absent or complete.
``extract`` unpacks .zip / .tar(.gz) archives through a temporary directory, refusing members that
would land outside the target. ``python -m datatools.download GROUP...`` fetches entries of the
manifest in ``datatools.sources``; ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

import requests
import urllib3.exceptions
from tqdm import tqdm

from datatools import sources as manifest
from datatools.lockfile import DownloadLock
from lxrt.fileio import atomic_write

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_NETWORK_HINT = (
    "downloads need network access: check the connection and proxy settings, "
    "or fetch from a reachable mirror (--base-url)"
)


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or unpacked; the message names the file and the cause."""


class _Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx, short body); ``offline``: never reached the host."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


# ----------------------------------------------------------------------------------------------------
# The partial file


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _PartFile:
    """``<dest>.part`` opened for appending, locked against a second writer, with running digests."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        self.path = path
        self._algorithms = algorithms
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
        if not self._digests or self._hashed == self.size:
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

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


# ----------------------------------------------------------------------------------------------------
# Transports: each opens the remote file at a byte offset


@dataclass
class _Body:
    """An open remote file. ``start`` is where the bytes begin: the requested offset, or 0 when the
    server could not (or should not) resume. ``version`` identifies this revision of the file."""

    start: int
    total: int | None
    version: dict[str, Any]
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """Parse ``bytes START-END/TOTAL`` (TOTAL may be ``*``) into (START, TOTAL)."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[6:].partition("/")
    first = span.partition("-")[0]
    try:
        return int(first), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


class _HttpTransport:
    def __init__(self, url: str, session: requests.Session, timeout: float) -> None:
        self.url = url
        self.session = session
        self.timeout = timeout

    def _get(self, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.get(self.url, headers=headers, stream=True, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as err:
            host = urlparse(self.url).netloc
            raise _Transient(f"cannot reach {host} ({err.__class__.__name__}: {err})", offline=True) from err
        except requests.RequestException as err:
            raise DownloadError(f"cannot request {self.url}: {err}") from err

    def open(self, offset: int, version: dict[str, Any] | None) -> _Body:
        # identity: Range offsets count stored bytes, and the size check must see the same bytes.
        headers = {"Accept-Encoding": "identity"}
        if offset and (version or {}).get("encoded"):
            offset = 0  # offsets into a content-encoded body cannot be mapped to a byte range
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = (version or {}).get("etag")
            # If-Range makes a server whose file changed send the whole new file instead of a splice.
            validator = etag if etag and not etag.startswith("W/") else (version or {}).get("last_modified")
            if validator:
                headers["If-Range"] = validator
        resp = self._get(headers)
        status = resp.status_code
        if status == 416 and offset:
            resp.close()
            return self.open(0, None)
        if status in (404, 410):
            resp.close()
            raise DownloadError(f"file not found at {self.url} (HTTP {status})")
        if status in (401, 403):
            resp.close()
            raise DownloadError(f"access denied to {self.url} (HTTP {status})")
        if status >= 500 or status in (408, 429):
            resp.close()
            raise _Transient(f"server error HTTP {status} {resp.reason} for {self.url}")
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if status == 206 and encoding != "identity":
            resp.close()  # a compressed slice cannot be appended to stored bytes
            return self.open(0, None)
        if status == 206:
            parsed = _content_range(resp.headers.get("Content-Range"))
            if parsed is None or parsed[0] != offset:
                resp.close()
                return self.open(0, None)
            start, total = parsed
        elif status == 200:
            length = resp.headers.get("Content-Length")
            start, total = 0, (int(length) if length and length.isdigit() else None)
        else:
            resp.close()
            raise DownloadError(f"unexpected answer HTTP {status} {resp.reason} for {self.url}")
        version = {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
        if encoding != "identity":
            # A server that compresses anyway: store the decoded bytes, whose size the header does not give.
            return _Body(0, None, {"encoded": encoding}, self._chunks(resp, decode=True), resp.close)
        return _Body(start, total, version, self._chunks(resp), resp.close)

    def _chunks(self, resp: requests.Response, decode: bool = False) -> Iterator[bytes]:
        try:
            yield from resp.raw.stream(CHUNK, decode_content=decode)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise _Transient(f"transfer interrupted ({err.__class__.__name__}: {err})") from err


def make_s3_client(endpoint_url: str | None = None, timeout: float = 60) -> Any:
    """A boto3 S3 client for any S3-compatible server.

    The endpoint is ``endpoint_url``, else ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``, else AWS.
    Without configured credentials, requests are sent unsigned (public buckets).
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    # Retries are done by download() itself, which resumes instead of starting over.
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    if session.get_credentials() is None:
        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client(
        "s3", endpoint_url=endpoint or None, region_name=session.region_name or "us-east-1", config=config
    )


class _S3Transport:
    def __init__(self, url: str, client: Any) -> None:
        parsed = urlparse(url)
        self.url = url
        self.bucket = parsed.netloc
        self.key = parsed.path.lstrip("/")
        if not self.bucket or not self.key:
            raise DownloadError(f"{url} is not an s3://bucket/key URL")
        self.client = client

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            return fn(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise DownloadError(f"file not found at {self.url} ({code})") from err
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise DownloadError(
                    f"access denied to {self.url} ({code}); check AWS credentials, or remove them for a "
                    "public bucket so requests go unsigned"
                ) from err
            if status >= 500 or code in ("412", "PreconditionFailed", "SlowDown"):
                raise _Transient(f"S3 error {code} for {self.url}") from err
            raise DownloadError(f"S3 error {code} for {self.url}: {err}") from err
        except (EndpointConnectionError, ConnectTimeoutError) as err:
            raise _Transient(f"cannot reach the S3 endpoint ({err})", offline=True) from err
        except NoCredentialsError as err:
            raise DownloadError(f"no AWS credentials for {self.url}: {err}") from err
        except BotoCoreError as err:
            raise _Transient(f"S3 request for {self.url} failed ({err})") from err

    def open(self, offset: int, version: dict[str, Any] | None) -> _Body:
        head = self._call(self.client.head_object)
        total, etag = int(head["ContentLength"]), head.get("ETag")
        # IfMatch: an object replaced between HEAD and GET fails (and is retried) instead of mixing.
        kwargs: dict[str, Any] = {"IfMatch": etag} if etag else {}
        start = 0
        if 0 < offset < total and etag and (version or {}).get("etag") == etag:
            kwargs["Range"] = f"bytes={offset}-"
            start = offset
        obj = self._call(self.client.get_object, **kwargs)
        body = obj["Body"]
        return _Body(start, total, {"etag": etag}, self._chunks(body), body.close)

    def _chunks(self, body: Any) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as err:
            raise _Transient(f"transfer interrupted ({err.__class__.__name__}: {err})") from err


class _FileTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(unquote(urlparse(url).path))

    def open(self, offset: int, version: dict[str, Any] | None) -> _Body:
        try:
            st = self.path.stat()
            fh = open(self.path, "rb")  # noqa: SIM115 - closed through _Body.close
        except FileNotFoundError:
            raise DownloadError(f"file not found at {self.url}") from None
        except OSError as err:
            raise DownloadError(f"cannot read {self.url}: {err}") from err
        same = (version or {}).get("mtime_ns") == st.st_mtime_ns
        start = offset if same and offset < st.st_size else 0
        fh.seek(start)
        chunks = iter(lambda: fh.read(CHUNK), b"")
        return _Body(start, st.st_size, {"mtime_ns": st.st_mtime_ns}, chunks, fh.close)


# ----------------------------------------------------------------------------------------------------
# download()


def _file_digests(path: Path, algorithms: list[str], progress: bool) -> dict[str, str]:
    digests = {a: hashlib.new(a) for a in algorithms}
    with (
        open(path, "rb") as fh,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"verify {path.name}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for block in iter(lambda: fh.read(CHUNK), b""):
            for d in digests.values():
                d.update(block)
            bar.update(len(block))
    return {a: d.hexdigest() for a, d in digests.items()}


def _mismatch(path: Path, expected: dict[str, str], expected_size: int | None, progress: bool) -> str | None:
    """What about ``path`` differs from the expectations (None when it matches)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size: expected {expected_size} bytes, got {size}"
    if expected:
        got = _file_digests(path, list(expected), progress)
        for algo, want in expected.items():
            if got[algo] != want:
                return f"{algo}: expected {want}, got {got[algo]}"
    return None


def _transport(url: str, session: requests.Session | None, s3_client: Any, timeout: float) -> Any:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return _HttpTransport(url, session or requests.Session(), timeout)
    if scheme == "s3":
        return _S3Transport(url, s3_client if s3_client is not None else make_s3_client(timeout=timeout))
    if scheme == "file":
        return _FileTransport(url)
    raise DownloadError(f"unsupported URL scheme in {url!r} (use http://, https://, s3:// or file://)")


def _fill_part(
    transport: Any,
    url: str,
    part: _PartFile,
    meta_path: Path,
    retries: int,
    backoff: float,
    progress: bool,
    label: str,
) -> None:
    """Bring ``part`` to the complete remote content, resuming and retrying transient failures."""
    meta = _read_json(meta_path)
    if part.size and (meta is None or meta.get("url") != url):
        # Bytes without a record of their source cannot be trusted to be a prefix of this file.
        part.reset()
        meta = None
    for attempt in range(retries + 1):
        total = meta.get("total") if meta else None
        if total is not None and part.size == total:
            return
        if total is not None and part.size > total:
            part.reset()
        offset = part.size
        try:
            body = transport.open(offset, meta.get("version") if meta and offset else None)
            try:
                if body.start != offset:
                    log.info("%s: the server cannot resume at byte %d, starting over", label, offset)
                    part.reset()
                elif offset:
                    log.info("%s: resuming at byte %d", label, offset)
                if body.start == 0 or meta is None:
                    meta = {"url": url, "total": body.total, "version": body.version}
                    _write_json_atomic(meta_path, meta)
                elif body.total != total:
                    part.reset()
                    meta = None
                    raise _Transient(f"{url} changed size while resuming")
                with tqdm(
                    total=body.total,
                    initial=part.size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    for chunk in body.chunks:
                        part.write(chunk)
                        bar.update(len(chunk))
            finally:
                body.close()
            if body.total is not None and part.size != body.total:
                raise _Transient(f"connection closed after {part.size} of {body.total} bytes")
            return
        except _Transient as err:
            if attempt == retries:
                if err.offline:
                    raise DownloadError(f"cannot download {url}: {err}; {_NETWORK_HINT}") from err
                raise DownloadError(
                    f"download of {url} failed after {attempt + 1} attempt(s): {err}; "
                    f"{part.size} bytes are kept in {part.path}, run again to resume"
                ) from err
            wait = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.1fs", label, err, wait)
            time.sleep(wait)


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    md5: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60,
    session: requests.Session | None = None,
    s3_client: Any = None,
    backoff: float = 1.0,
    digests_out: dict[str, Any] | None = None,
) -> Path:
    """Fetch ``url`` (http(s)://, s3://bucket/key or file://) to ``dest`` and return ``dest``.

    An existing ``dest`` that matches the given size/checksums is kept without any request (with
    neither given, any existing ``dest`` counts as done). Bytes go to ``<dest>.part``, which a later
    call resumes (HTTP Range / S3 ranged GET) when the remote file is unchanged; transient failures are
    retried ``retries`` times with exponential ``backoff``. A checksum or size mismatch raises
    ``DownloadError`` and leaves the bytes in ``<dest>.part-bad``; ``dest`` only ever appears complete.
    ``digests_out`` receives the SHA-256 of a completed transfer (``{}`` when ``dest`` was kept).
    """
    dest = Path(dest)
    expected = {a: h.strip().lower() for a, h in (("sha256", sha256), ("md5", md5)) if h}
    if dest.is_dir():
        raise DownloadError(f"destination {dest} is a directory, expected a file path")
    if dest.exists():
        problem = _mismatch(dest, expected, expected_size, progress)
        if problem is None:
            log.info("%s: already present", dest)
            return dest
        log.warning("%s exists but does not match (%s); downloading again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part_path = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    transport = _transport(url, session, s3_client, timeout)
    part = _PartFile(part_path, sorted({*expected, "sha256"}))
    try:
        _fill_part(transport, url, part, meta_path, retries, backoff, progress, dest.name)
        digests = part.finish()
    finally:
        part.close()
        if session is None and isinstance(transport, _HttpTransport):
            transport.session.close()
    size = part_path.stat().st_size
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"expected {expected_size} bytes, got {size}"
    for algo, want in expected.items():
        if problem is None and digests[algo] != want:
            problem = f"expected {algo} {want}, got {digests[algo]}"
    if problem is not None:
        bad = dest.with_name(dest.name + ".part-bad")
        os.replace(part_path, bad)
        meta_path.unlink(missing_ok=True)
        raise DownloadError(
            f"verification failed for {url}: {problem}; the bytes were kept in {bad} and not published to {dest}"
        )
    os.replace(part_path, dest)
    meta_path.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    if digests_out is not None:
        digests_out.update(sha256=digests["sha256"], size=size)
    return dest


# ----------------------------------------------------------------------------------------------------
# extract()


def _member_path(root: Path, name: str, archive: Path) -> Path:
    """Where member ``name`` goes under ``root``; refuses absolute paths and ``..`` escapes."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise DownloadError(f"{archive}: member {name!r} would be written outside the target; refusing")
    target = root.joinpath(*[p for p in pure.parts if p not in ("", ".")])
    if not target.resolve().is_relative_to(root.resolve()):
        raise DownloadError(f"{archive}: member {name!r} would be written outside the target; refusing")
    return target


def _copy_member(src: IO[bytes], target: Path, bar: tqdm | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
            if bar is not None:
                bar.update(len(block))
        out.flush()
        os.fsync(out.fileno())


def _unzip(archive: Path, root: Path, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            with tqdm(
                total=sum(i.file_size for i in infos),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"unpack {archive.name}",
                disable=not progress,
                leave=False,
            ) as bar:
                for info in infos:
                    target = _member_path(root, info.filename, archive)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    with zf.open(info) as src:
                        _copy_member(src, target, bar)
    except (zipfile.BadZipFile, zlib.error) as err:
        raise DownloadError(f"{archive} is not a valid zip archive (truncated or corrupt?): {err}") from err


def _untar(archive: Path, root: Path, progress: bool) -> None:
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(fileobj=raw, mode="r:*") as tf,
            tqdm(
                total=archive.stat().st_size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"unpack {archive.name}",
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for member in tf:
                target = _member_path(root, member.name, archive)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tf.extractfile(member)
                    assert src is not None  # regular members always have data
                    with src:
                        _copy_member(src, target, None)
                else:
                    raise DownloadError(
                        f"{archive}: member {member.name!r} is a link or special file; refusing to extract"
                    )
                bar.update(raw.tell() - bar.n)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError) as err:
        raise DownloadError(f"{archive} is not a readable tar archive (truncated or corrupt?): {err}") from err


def _merge_into(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``: whole when ``dst`` is new, else entry by entry."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if not dst.is_dir():
        raise DownloadError(f"cannot unpack into {dst}: it exists and is not a directory")
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and target.is_dir():
            _merge_into(child, target)
        elif child.is_dir() != target.is_dir() and target.exists():
            raise DownloadError(f"cannot unpack {child.name}: {target} exists with a different type")
        else:
            os.replace(child, target)


def extract(archive: str | os.PathLike[str], out_dir: str | os.PathLike[str], progress: bool = True) -> Path:
    """Unpack a .zip, .tar, .tar.gz/.tgz (or .tar.bz2/.tar.xz) archive into ``out_dir``.

    Members are first unpacked into a temporary directory beside ``out_dir`` and moved in only when
    the whole archive was read, so a corrupt archive leaves ``out_dir`` untouched. Members with
    absolute paths, ``..`` components, links or device entries are refused.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    name = archive.name.lower()
    if name.endswith(".zip"):
        unpack = _unzip
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        unpack = _untar
    else:
        raise DownloadError(f"{archive}: unknown archive type (expected .zip, .tar, .tar.gz or .tgz)")
    if not archive.is_file():
        raise DownloadError(f"archive {archive} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.unpack-", dir=out_dir.parent))
    try:
        unpack(archive, tmp, progress)
        _merge_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(out_dir.parent)
    return out_dir


# ----------------------------------------------------------------------------------------------------
# Manifest entries and the command line


@dataclass(frozen=True)
class FetchConfig:
    """Where manifest files go and how they are fetched."""

    data_root: Path = Path("data")
    snap_root: Path = Path("snap")
    base_url: str | None = None
    keep_archives: bool = False
    retries: int = 3
    timeout: float = 60
    progress: bool = True


def _outputs(entry: manifest.Source, cfg: FetchConfig) -> list[Path]:
    return [manifest.resolve(o, cfg.data_root, cfg.snap_root) for o in entry.outputs or (entry.dest,)]


def remote_size(url: str, cfg: FetchConfig, session: requests.Session | None = None) -> int | None:
    """The size the server gives for ``url`` now (Content-Length, S3 ContentLength, file size), or None."""
    transport = _transport(url, session, None, cfg.timeout)
    try:
        body = transport.open(0, None)
        body.close()
        return body.total
    finally:
        if session is None and isinstance(transport, _HttpTransport):
            transport.session.close()


def verify_source(
    entry: manifest.Source, cfg: FetchConfig, lock: DownloadLock, session: requests.Session | None = None
) -> list[str]:
    """What is wrong with ``entry``'s files on disk (empty: each matches its lock record, and the
    server still offers the size that was downloaded)."""
    problems = []
    keys = entry.outputs or (entry.dest,)
    for key, out in zip(keys, _outputs(entry, cfg)):
        rec = lock.get(key)
        if not out.is_file():
            problems.append(f"{out}: missing")
        elif rec is None:
            problems.append(f"{out}: no record of a completed download in {lock.path}")
        elif out.stat().st_size != rec["size"]:
            problems.append(f"{out}: {out.stat().st_size} bytes on disk, {rec['size']} when downloaded")
        elif _file_digests(out, ["sha256"], cfg.progress)["sha256"] != rec["sha256"]:
            problems.append(f"{out}: SHA-256 differs from the one recorded when it was downloaded")
    fetched = lock.get(entry.dest)
    url = entry.url_from(cfg.base_url)
    if not problems and fetched is not None:
        now = remote_size(url, cfg, session)
        if now is not None and now != fetched["size"]:
            problems.append(f"{url} now has {now} bytes, the downloaded copy had {fetched['size']}")
    return problems


def fetch_source(
    entry: manifest.Source,
    cfg: FetchConfig,
    session: requests.Session | None = None,
    lock: DownloadLock | None = None,
    verify: bool = False,
) -> list[Path]:
    """Download one manifest entry (and unpack it, for archives); returns the files it provides.

    Each completed file is recorded (size, SHA-256) in ``download.lock.json`` beside the data.
    ``verify`` re-checks files already there against those records and the server, and fetches again
    what does not match.
    """
    lock = lock if lock is not None else DownloadLock.beside(cfg.data_root)
    outputs = _outputs(entry, cfg)
    dest = manifest.resolve(entry.dest, cfg.data_root, cfg.snap_root)
    if verify and any(p.exists() for p in outputs):
        problems = verify_source(entry, cfg, lock, session)
        if not problems:
            log.info("%s: verified", entry.name)
            return outputs
        log.warning("%s: %s; fetching it again", entry.name, "; ".join(problems))
        for key, out in zip(entry.outputs or (entry.dest,), outputs):
            out.unlink(missing_ok=True)
            lock.forget(key)
        dest.unlink(missing_ok=True)
        lock.forget(entry.dest)
    if entry.archive and all(p.is_file() for p in outputs):
        log.info("%s: already unpacked", entry.name)
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
    )
    if fetched:
        lock.record(entry.dest, fetched["size"], fetched["sha256"], url)
    if not entry.archive:
        return outputs
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
            _fsync_dir(out.parent)
        for key, out in zip(entry.outputs, outputs):
            digest = _file_digests(out, ["sha256"], cfg.progress)["sha256"]
            lock.record(key, out.stat().st_size, digest, url, archive=entry.dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not cfg.keep_archives:
        dest.unlink()
    return outputs


def _print_list() -> None:
    for group, about in manifest.GROUPS.items():
        print(f"{group}: {about}")
        for s in manifest.SOURCES:
            if s.group == group:
                size = f" ({s.approx_size})" if s.approx_size else ""
                print(f"  {s.name:34s} -> {s.dest}{size}")


def _print_plan(entries: list[manifest.Source], cfg: FetchConfig) -> None:
    for s in entries:
        outputs = _outputs(s, cfg)
        state = "present" if all(p.is_file() for p in outputs) else "missing"
        dest = manifest.resolve(s.dest, cfg.data_root, cfg.snap_root)
        print(f"[{s.group}] {s.name} ({state})")
        print(f"    {s.url_from(cfg.base_url)}")
        print(f"    -> {dest}")
        if s.archive:
            print(f"    unpack -> {', '.join(str(p) for p in outputs)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m datatools.download",
        description="Download the original LXMERT data files (question JSON, obj36 features, weights) by "
        "group or file name, or a single URL with --url/--out. Interrupted downloads resume when run again.",
    )
    p.add_argument(
        "groups",
        nargs="*",
        metavar="GROUP",
        help=f"groups ({', '.join(manifest.GROUPS)}), file names from --list, or 'all'",
    )
    p.add_argument("--list", action="store_true", help="list the groups and their files, then exit")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched and where; fetch nothing")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="folder for data/ files (default: data)")
    p.add_argument("--snap-root", type=Path, default=Path("snap"), help="folder for snap/ files (default: snap)")
    p.add_argument(
        "--base-url",
        help="fetch from a mirror with the same layout (http(s)://, s3://bucket/prefix, "
        "file:///dir) instead of the original servers",
    )
    p.add_argument("--keep-archives", action="store_true", help="keep .zip files after unpacking them")
    p.add_argument("--retries", type=int, default=3, help="retries per file on transient errors (default: 3)")
    p.add_argument("--timeout", type=float, default=60, help="network timeout in seconds (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-check files already on disk against the size and SHA-256 recorded in "
        "<data-root>/download.lock.json when they were downloaded (and the server's current size); "
        "fetch again what does not match",
    )
    one = p.add_argument_group("single file")
    one.add_argument("--url", help="download this URL instead of manifest groups")
    one.add_argument("--out", type=Path, help="destination file for --url")
    one.add_argument("--sha256", help="expected SHA-256 of --url")
    one.add_argument("--md5", help="expected MD5 of --url")
    one.add_argument("--size", type=int, help="expected size in bytes of --url")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        _print_list()
        return 0
    progress = not args.no_progress
    try:
        if args.url:
            if args.groups or not args.out:
                raise DownloadError("--url needs --out and no GROUP arguments")
            if args.dry_run:
                print(f"{args.url}\n    -> {args.out}")
                return 0
            download(
                args.url,
                args.out,
                sha256=args.sha256,
                md5=args.md5,
                expected_size=args.size,
                progress=progress,
                retries=args.retries,
                timeout=args.timeout,
            )
            return 0
        if not args.groups:
            raise DownloadError("name at least one group or file to download (see --list)")
        try:
            entries = manifest.select(args.groups)
        except ValueError as err:
            raise DownloadError(str(err)) from None
        cfg = FetchConfig(
            args.data_root, args.snap_root, args.base_url, args.keep_archives, args.retries, args.timeout, progress
        )
        if args.dry_run:
            _print_plan(entries, cfg)
            return 0
        lock = DownloadLock.beside(cfg.data_root)
        with requests.Session() as session:
            for entry in tqdm(entries, desc="files", unit="file", disable=not progress or len(entries) < 2):
                fetch_source(entry, cfg, session, lock=lock, verify=args.verify)
                log.info("%s: done", entry.name)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
