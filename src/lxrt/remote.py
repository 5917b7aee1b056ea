"""Open a remote file at a byte offset: http(s):// (requests), s3://bucket/key (boto3) or file://.

Each transport's ``open(offset, version, timeout)`` returns a ``Body``: where its bytes start (the
offset asked for, or 0 when the server cannot or should not resume), the total size when known, an
identity of this revision of the file (ETag, Last-Modified, mtime) and the chunks. Failures worth
another attempt raise ``Transient``; final ones raise ``DownloadError``. boto3 is imported only for
s3:// URLs. ``lxrt.fetch`` builds resumable, verified downloads on top of this.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import requests
import urllib3.exceptions

CHUNK = 1 << 20
CONNECT_TIMEOUT = 15.0
"""Seconds to wait for a connection; a host that does not accept one by then is "cannot reach"."""


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or unpacked; the message names the file and the cause.

    ``reason``: ``"unreachable"`` (no connection to the server could be made), ``"deadline"`` (the
    file did not finish in the time allowed) or None (anything else).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class Transient(Exception):
    """A failure worth another attempt; ``unreachable``: no connection to the server was made."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class Body:
    """An open remote file: bytes from ``start`` on, ``total`` bytes in all (None: unknown)."""

    start: int
    total: int | None
    version: dict[str, Any]
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)


class Transport(Protocol):
    url: str

    def open(self, offset: int, version: dict[str, Any] | None, timeout: float) -> Body: ...

    def close(self) -> None: ...


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


def _why_unreachable(err: BaseException) -> str:
    """A few words for the innermost cause of a failed connection ("connection refused", ...)."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return "its name does not resolve"
        if isinstance(e, urllib3.exceptions.NameResolutionError):
            return "its name does not resolve"
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if getattr(e, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "no route to it"
        if isinstance(e, (urllib3.exceptions.ConnectTimeoutError, requests.ConnectTimeout, TimeoutError)) and not (
            isinstance(e, urllib3.exceptions.NewConnectionError)
        ):
            return "no connection within the time allowed"
        todo.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                    if isinstance(x, BaseException))
    return f"{err.__class__.__name__}"


def _never_connected(err: requests.RequestException) -> bool:
    """Whether a requests error happened before a connection to the server (or its proxy) was made."""
    if isinstance(err, (requests.ConnectTimeout, requests.exceptions.ProxyError)):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    # NewConnectionError (refused, no route, name not resolved) is a kind of ConnectTimeoutError.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


# ----------------------------------------------------------------------------------------------------
# http(s)://


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


class HttpTransport:
    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        self.url = url
        self.host = urlparse(url).netloc
        self._own = session is None
        self.session = session if session is not None else requests.Session()

    def close(self) -> None:
        if self._own:
            self.session.close()

    def _get(self, headers: dict[str, str], timeout: float) -> requests.Response:
        try:
            return self.session.get(
                self.url, headers=headers, stream=True, timeout=(min(CONNECT_TIMEOUT, timeout), timeout)
            )
        except requests.RequestException as err:
            if _never_connected(err):
                via = " through the proxy" if isinstance(err, requests.exceptions.ProxyError) else ""
                raise Transient(f"cannot reach {self.host}{via} ({_why_unreachable(err)})", unreachable=True) from err
            if isinstance(err, requests.exceptions.SSLError):
                raise DownloadError(f"no secure connection to {self.host} for {self.url}: {err}") from err
            if isinstance(err, requests.Timeout):
                raise Transient(f"the server {self.host} stopped answering after {_seconds(timeout)}") from err
            if isinstance(err, requests.ConnectionError):
                raise Transient(f"the connection to {self.host} broke before an answer ({err})") from err
            raise DownloadError(f"cannot request {self.url}: {err}") from err

    def open(self, offset: int, version: dict[str, Any] | None, timeout: float) -> Body:
        # identity: Range offsets count stored bytes, and the size check must see the same bytes.
        headers = {"Accept-Encoding": "identity"}
        version = version or {}
        if offset and version.get("encoded"):
            offset = 0  # offsets into a content-encoded body cannot be mapped to a byte range
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = version.get("etag")
            # If-Range makes a server whose file changed send the whole new file instead of a splice.
            validator = etag if etag and not etag.startswith("W/") else version.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        resp = self._get(headers, timeout)
        status = resp.status_code
        if status == 416 and offset:
            resp.close()
            return self.open(0, None, timeout)
        if status in (404, 410):
            resp.close()
            raise DownloadError(f"file not found at {self.url} (HTTP {status})")
        if status in (401, 403):
            resp.close()
            raise DownloadError(f"access denied to {self.url} (HTTP {status})")
        if status >= 500 or status in (408, 429):
            resp.close()
            raise Transient(f"server error HTTP {status} {resp.reason} for {self.url}")
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if status == 206 and encoding != "identity":
            resp.close()  # a compressed slice cannot be appended to stored bytes
            return self.open(0, None, timeout)
        if status == 206:
            parsed = _content_range(resp.headers.get("Content-Range"))
            if parsed is None or parsed[0] != offset:
                resp.close()
                return self.open(0, None, timeout)
            start, total = parsed
        elif status == 200:
            length = resp.headers.get("Content-Length")
            start, total = 0, (int(length) if length and length.isdigit() else None)
        else:
            resp.close()
            raise DownloadError(f"unexpected answer HTTP {status} {resp.reason} for {self.url}")
        if encoding != "identity":
            # A server that compresses anyway: store the decoded bytes, whose size the header does not give.
            return Body(0, None, {"encoded": encoding}, self._chunks(resp, timeout, decode=True), resp.close)
        tag = {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
        return Body(start, total, tag, self._chunks(resp, timeout), resp.close)

    def _chunks(self, resp: requests.Response, timeout: float, decode: bool = False) -> Iterator[bytes]:
        # read1: whatever has arrived, so a caller watching a deadline sees a slow server's every byte.
        try:
            while block := resp.raw.read1(CHUNK, decode_content=decode):
                yield block
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as err:
            raise Transient(f"the server {self.host} stopped answering after {_seconds(timeout)}") from err
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise Transient(f"transfer interrupted ({err.__class__.__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------------
# s3://bucket/key


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
    # Retries are done by lxrt.fetch.download itself, which resumes instead of starting over.
    config = Config(connect_timeout=min(CONNECT_TIMEOUT, timeout), read_timeout=timeout,
                    retries={"max_attempts": 1})
    if session.get_credentials() is None:
        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client(
        "s3", endpoint_url=endpoint or None, region_name=session.region_name or "us-east-1", config=config
    )


class S3Transport:
    def __init__(self, url: str, client: Any) -> None:
        parsed = urlparse(url)
        self.url = url
        self.bucket = parsed.netloc
        self.key = parsed.path.lstrip("/")
        if not self.bucket or not self.key:
            raise DownloadError(f"{url} is not an s3://bucket/key URL")
        self.client = client

    def close(self) -> None:
        pass

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
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
                raise Transient(f"S3 error {code} for {self.url}") from err
            raise DownloadError(f"S3 error {code} for {self.url}: {err}") from err
        except ReadTimeoutError as err:
            timeout = self.client.meta.config.read_timeout
            raise Transient(f"the S3 endpoint stopped answering after {_seconds(timeout)}") from err
        except (EndpointConnectionError, ConnectTimeoutError) as err:
            raise Transient(f"cannot reach the S3 endpoint ({_why_unreachable(err)}: {err})",
                            unreachable=True) from err
        except NoCredentialsError as err:
            raise DownloadError(f"no AWS credentials for {self.url}: {err}") from err
        except BotoCoreError as err:
            raise Transient(f"S3 request for {self.url} failed ({err})") from err

    def open(self, offset: int, version: dict[str, Any] | None, timeout: float) -> Body:
        head = self._call(self.client.head_object)
        total, etag = int(head["ContentLength"]), head.get("ETag")
        # IfMatch: an object replaced between HEAD and GET fails (and is retried) instead of mixing.
        kwargs: dict[str, Any] = {"IfMatch": etag} if etag else {}
        start = 0
        if 0 < offset < total and etag and (version or {}).get("etag") == etag:
            kwargs["Range"] = f"bytes={offset}-"
            start = offset
        body = self._call(self.client.get_object, **kwargs)["Body"]
        return Body(start, total, {"etag": etag}, self._chunks(body), body.close)

    def _chunks(self, body: Any) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ReadTimeoutError

        try:
            yield from body.iter_chunks(CHUNK)
        except ReadTimeoutError as err:
            timeout = self.client.meta.config.read_timeout
            raise Transient(f"the S3 endpoint stopped answering after {_seconds(timeout)}") from err
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as err:
            raise Transient(f"transfer interrupted ({err.__class__.__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------------
# file://


class FileTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(unquote(urlparse(url).path))

    def close(self) -> None:
        pass

    def open(self, offset: int, version: dict[str, Any] | None, timeout: float) -> Body:
        try:
            st = self.path.stat()
            fh = open(self.path, "rb")  # noqa: SIM115 - closed through Body.close
        except FileNotFoundError:
            raise DownloadError(f"file not found at {self.url}") from None
        except OSError as err:
            raise DownloadError(f"cannot read {self.url}: {err}") from err
        same = (version or {}).get("mtime_ns") == st.st_mtime_ns
        start = offset if same and offset < st.st_size else 0
        fh.seek(start)
        chunks = iter(lambda: fh.read(CHUNK), b"")
        return Body(start, st.st_size, {"mtime_ns": st.st_mtime_ns}, chunks, fh.close)


def open_transport(url: str, session: requests.Session | None = None, s3_client: Any = None,
                   timeout: float = 60) -> Transport:
    """The transport for ``url``'s scheme; ``session``/``s3_client`` are reused when given."""
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpTransport(url, session)
    if scheme == "s3":
        return S3Transport(url, s3_client if s3_client is not None else make_s3_client(timeout=timeout))
    if scheme == "file":
        return FileTransport(url)
    raise DownloadError(f"unsupported URL scheme in {url!r} (use http://, https://, s3:// or file://)")
