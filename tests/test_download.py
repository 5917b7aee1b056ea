"""Downloads against real local servers: an HTTP server with Range support and a moto S3 server."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from datatools import sources
from datatools.download import DownloadError, download, extract, main, make_s3_client

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = os.urandom(2_500_000 + 123)  # a few 1 MiB chunks plus a ragged tail


# ----------------------------------------------------------------------------------------------------
# A small HTTP file server with byte ranges and fault modes


@dataclass
class Served:
    """What the server holds and how it misbehaves; ``log`` records every request it answered."""

    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None  # next response: send this many body bytes, then cut the connection
    ignore_range: bool = False  # answer every request with the whole file (200)
    fail_next: int = 0  # answer this many requests with 503
    gzip_anyway: bool = False  # compress bodies even though the client asks for identity
    silent: bool = False  # accept the connection, then never answer
    stall_after: int | None = None  # send this many body bytes, then fall silent with the connection open
    trickle: float | None = None  # send the body one byte per this many seconds
    log: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends every wait at teardown

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data
        self.etags[path] = '"' + hashlib.md5(data).hexdigest() + '"'


def _handler(state: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str], record: dict) -> None:
            record.update(status=status, sent=0)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self._body(body, record)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up, as it may

        def _body(self, body: bytes, record: dict) -> None:
            if state.trickle is not None:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    record["sent"] = i + 1
                    if state.release.wait(state.trickle):
                        break
                self.close_connection = True
                return
            if state.stall_after is not None:
                self.wfile.write(body[: state.stall_after])
                self.wfile.flush()
                record["sent"] = state.stall_after
                state.release.wait(60)
                self.close_connection = True
                return
            if state.drop_after is not None:
                cut, state.drop_after = state.drop_after, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                record["sent"] = cut
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)
            record["sent"] = len(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            record = {"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")}
            state.log.append(record)
            if state.silent:
                state.release.wait(60)
                self.close_connection = True
                return
            if state.fail_next:
                state.fail_next -= 1
                self._reply(503, b"busy", {}, record)
                return
            data = state.files.get(self.path)
            if data is None:
                self._reply(404, b"no such file", {}, record)
                return
            etag = state.etags[self.path]
            headers = {"ETag": etag, "Accept-Ranges": "bytes"}
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and not state.ignore_range and (if_range is None or if_range == etag):
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, record)
                    return
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._reply(206, data[start:], headers, record)
                return
            if state.gzip_anyway:
                headers["Content-Encoding"] = "gzip"
                data = gzip.compress(data)
            self._reply(200, data, headers, record)

    return Handler


@pytest.fixture()
def http(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    state = Served()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------
# HTTP


def test_http_full_download(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    dest = tmp_path / "sub" / "f.bin"
    out = download(
        f"{http.base}/f.bin",
        dest,
        sha256=sha256(PAYLOAD),
        md5=hashlib.md5(PAYLOAD).hexdigest(),
        expected_size=len(PAYLOAD),
        progress=False,
    )
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]  # no .part / .part.json left


def test_interrupted_download_resumes_with_range(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    http.drop_after = 1_300_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{http.base}/f.bin", dest, retries=0, progress=False)
    assert not dest.exists()
    kept = (tmp_path / "f.bin.part").read_bytes()
    assert 0 < len(kept) < len(PAYLOAD)
    assert kept == PAYLOAD[: len(kept)]

    download(f"{http.base}/f.bin", dest, sha256=sha256(PAYLOAD), retries=0, progress=False)
    resumed = http.log[-1]
    assert resumed["range"] == f"bytes={len(kept)}-"
    assert resumed["if_range"] == http.etags["/f.bin"]
    assert resumed["status"] == 206 and resumed["sent"] == len(PAYLOAD) - len(kept)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()


def test_retries_resume_within_one_call(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    http.drop_after = 700_000
    http.fail_next = 0
    dest = download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=2, backoff=0.01, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(http.log) == 2 and http.log[1]["range"] is not None and http.log[1]["status"] == 206


def test_server_errors_are_retried(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", b"abc")
    http.fail_next = 2
    dest = download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=2, backoff=0.01, progress=False)
    assert dest.read_bytes() == b"abc"
    assert [r["status"] for r in http.log] == [503, 503, 200]


def test_server_ignoring_range_restarts_from_zero(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    http.drop_after = 1_000_000
    with pytest.raises(DownloadError):
        download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=0, progress=False)
    http.ignore_range = True
    dest = download(f"{http.base}/f.bin", tmp_path / "f.bin", sha256=sha256(PAYLOAD), retries=0, progress=False)
    assert http.log[-1]["range"] is not None and http.log[-1]["status"] == 200
    assert dest.read_bytes() == PAYLOAD


def test_changed_remote_file_is_not_spliced(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    http.drop_after = 1_000_000
    with pytest.raises(DownloadError):
        download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=0, progress=False)
    new = bytes(reversed(PAYLOAD))
    http.put("/f.bin", new)  # new ETag: the If-Range check makes the server send the whole file
    dest = download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=0, progress=False)
    assert dest.read_bytes() == new


def test_compressing_server_yields_decoded_bytes(http: Served, tmp_path: Path) -> None:
    body = b'[{"img_id": "COCO_val2014_000000000042"}]' * 5000
    http.put("/q.json", body)
    http.gzip_anyway = True
    dest = download(f"{http.base}/q.json", tmp_path / "q.json", sha256=sha256(body), progress=False)
    assert http.log[0]["sent"] < len(body) and dest.read_bytes() == body


def test_checksum_mismatch_is_not_published(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(f"{http.base}/f.bin", dest, sha256=wrong, progress=False)
    msg = str(info.value)
    assert f"{http.base}/f.bin" in msg and wrong in msg and sha256(PAYLOAD) in msg and "f.bin.part-bad" in msg
    assert not dest.exists()
    assert (tmp_path / "f.bin.part-bad").read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="expected 5 bytes"):
        download(f"{http.base}/f.bin", tmp_path / "g.bin", expected_size=5, progress=False)
    assert not (tmp_path / "g.bin").exists()


def test_not_found(http: Served, tmp_path: Path) -> None:
    dest = tmp_path / "missing.json"
    with pytest.raises(DownloadError, match=r"not found at http://127\.0\.0\.1:\d+/missing\.json \(HTTP 404\)"):
        download(f"{http.base}/missing.json", dest, progress=False)
    assert not dest.exists()
    assert len(http.log) == 1  # a 404 is final, not retried


def test_cache_hit_makes_no_request(http: Served, tmp_path: Path) -> None:
    http.put("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    download(f"{http.base}/f.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    download(f"{http.base}/f.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    download(f"{http.base}/f.bin", dest, expected_size=len(PAYLOAD), progress=False)
    assert len(http.log) == 1
    dest.write_bytes(b"stale")  # a damaged copy is fetched again
    download(f"{http.base}/f.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert len(http.log) == 2 and dest.read_bytes() == PAYLOAD


def test_unreachable_host_says_network_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="downloads need network access"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, backoff=0.01, progress=False)
    assert not (tmp_path / "x").exists()


def test_file_url_and_bad_scheme(tmp_path: Path) -> None:
    src = tmp_path / "src file.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "out" / "copy.bin", sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="not found"):
        download((tmp_path / "nope").as_uri(), tmp_path / "nope.out", progress=False)
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download("ftp://example.invalid/x", tmp_path / "x", progress=False)


# ----------------------------------------------------------------------------------------------------
# Faults: errors before the first byte, servers that fall silent or trickle, hosts that cannot be reached


def _refused_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_error_before_the_first_byte_leaves_no_partial_file(http: Served, tmp_path: Path) -> None:
    """Bug: a 404 (or a 503 to the end) left an empty ``.part`` beside the destination."""
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{http.base}/missing.bin", tmp_path / "missing.bin", progress=False)
    assert list(tmp_path.iterdir()) == []
    http.put("/busy.bin", b"abc")
    http.fail_next = 5
    with pytest.raises(DownloadError, match=r"HTTP 503.*nothing was received"):
        download(f"{http.base}/busy.bin", tmp_path / "busy.bin", retries=1, backoff=0.01, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_server_that_never_answers_is_not_called_unreachable(http: Served, tmp_path: Path) -> None:
    """Bug: a server that accepted the connection and then said nothing was reported as "cannot reach
    ... downloads need network access"."""
    http.put("/f.bin", PAYLOAD)
    http.silent = True
    with pytest.raises(DownloadError) as info:
        download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=0, timeout=0.5, progress=False)
    msg = str(info.value)
    assert "the server 127.0.0.1:" in msg and "stopped answering after 0.5 s" in msg
    assert "cannot reach" not in msg and "network access" not in msg and info.value.reason is None
    assert list(tmp_path.iterdir()) == []


def test_server_falling_silent_mid_transfer_keeps_the_bytes(http: Served, tmp_path: Path) -> None:
    """Bug: a transfer that stalled was "interrupted (ReadTimeoutError ...)" instead of saying the
    server stopped answering; the bytes received must stay for the next run."""
    http.put("/f.bin", PAYLOAD)
    http.stall_after = 300_000
    with pytest.raises(DownloadError, match=r"stopped answering after 0\.5 s; 300000 bytes are kept"):
        download(f"{http.base}/f.bin", tmp_path / "f.bin", retries=0, timeout=0.5, progress=False)
    assert (tmp_path / "f.bin.part").read_bytes() == PAYLOAD[:300_000]
    http.stall_after = None
    download(f"{http.base}/f.bin", tmp_path / "f.bin", sha256=sha256(PAYLOAD), retries=0, progress=False)
    assert http.log[-1]["range"] == "bytes=300000-" and (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_trickling_server_ends_at_the_deadline_and_resumes(
    http: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: a server sending one byte every 1.5 s was never given up on (no overall deadline)."""
    http.put("/f.bin", PAYLOAD[:5000])
    http.trickle = 1.5
    dest = tmp_path / "f.bin"
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(f"{http.base}/f.bin", dest, retries=3, progress=False, deadline=2.5)
    took = time.monotonic() - started
    assert 2.5 <= took < 4.5, took
    assert info.value.reason == "deadline"
    kept = (tmp_path / "f.bin.part").read_bytes()
    assert 1 <= len(kept) <= 3 and kept == PAYLOAD[: len(kept)]
    assert f"did not finish within its deadline of 2.5 s ({len(kept)} of 5000 bytes" in str(info.value)
    assert f"{len(kept)} bytes are kept in {tmp_path / 'f.bin.part'}, run again to resume" in str(info.value)

    args = ["--url", f"{http.base}/f.bin", "--out", str(dest), "--no-progress", "--deadline", "2"]
    assert main(args) == 1  # the command line: the same message, and the flag that changes the limit
    err = capsys.readouterr().err
    assert "did not finish within its deadline of 2 s" in err and "(--deadline SECONDS; now 2)" in err
    more = (tmp_path / "f.bin.part").read_bytes()
    assert len(more) > len(kept) and http.log[-1]["range"] == f"bytes={len(kept)}-"

    http.trickle = None
    assert main(args) == 0
    assert http.log[-1]["range"] == f"bytes={len(more)}-" and dest.read_bytes() == PAYLOAD[:5000]


def test_unreachable_host_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Bug: a refused connection was retried with backoff (7 s with the default 3 retries) although
    nothing ever answered."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    port = _refused_port()
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=3, backoff=1.0, progress=False)
    assert time.monotonic() - started < 1.5
    assert info.value.reason == "unreachable"
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert main(["--url", f"http://127.0.0.1:{port}/x", "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "or fetch from a reachable mirror (--base-url)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# S3 (moto server on 127.0.0.1)


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = make_s3_client()
    bucket = f"lxmert-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="feats/f.bin", Body=PAYLOAD)
    return client, bucket


def test_s3_download_honours_endpoint_env(s3, tmp_path: Path) -> None:
    _, bucket = s3
    dest = download(f"s3://{bucket}/feats/f.bin", tmp_path / "f.bin", sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="not found"):
        download(f"s3://{bucket}/feats/none.bin", tmp_path / "none.bin", progress=False)
    assert not (tmp_path / "none.bin").exists()


def test_s3_resume_uses_ranged_get(s3, tmp_path: Path) -> None:
    from botocore.exceptions import ResponseStreamingError

    client, bucket = s3
    seen: list[tuple[str | None, int]] = []

    class Truncated:
        """The body of a GET whose connection drops after ``keep`` bytes."""

        def __init__(self, body, keep: int) -> None:
            self.body, self.keep = body, keep

        def iter_chunks(self, size: int):
            data = self.body.read(self.keep)
            yield data
            raise ResponseStreamingError(error="connection reset by peer")

        def close(self) -> None:
            self.body.close()

    def record(request, **_) -> None:
        seen.append((request.headers.get("Range", b"").decode() or None, 0))

    def cut(parsed, **_) -> None:
        parsed["Body"] = Truncated(parsed["Body"], 900_000)

    client.meta.events.register("before-send.s3.GetObject", record)
    client.meta.events.register("after-call.s3.GetObject", cut)
    url, dest = f"s3://{bucket}/feats/f.bin", tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="interrupted"):
        download(url, dest, retries=0, progress=False, s3_client=client)
    assert not dest.exists()
    assert (tmp_path / "f.bin.part").read_bytes() == PAYLOAD[:900_000]

    client.meta.events.unregister("after-call.s3.GetObject", cut)
    download(url, dest, sha256=sha256(PAYLOAD), retries=0, progress=False, s3_client=client)
    assert [r for r, _ in seen] == [None, "bytes=900000-"]
    assert dest.read_bytes() == PAYLOAD


def test_s3_without_credentials_is_unsigned(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore import UNSIGNED

    signed, bucket = s3
    signed.put_object_acl(Bucket=bucket, Key="feats/f.bin", ACL="public-read")  # a public dataset bucket
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    client = make_s3_client()
    assert client.meta.config.signature_version is UNSIGNED
    dest = download(f"s3://{bucket}/feats/f.bin", tmp_path / "f.bin", progress=False, s3_client=client)
    assert dest.read_bytes() == PAYLOAD


# ----------------------------------------------------------------------------------------------------
# extract


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_zip_and_tar_gz(tmp_path: Path) -> None:
    members = {"a/x.tsv": b"1\t2\n", "b.txt": PAYLOAD[:1000]}
    (tmp_path / "m.zip").write_bytes(_zip_bytes(members))
    with tarfile.open(tmp_path / "m.tar.gz", "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for archive in ("m.zip", "m.tar.gz"):
        out = tmp_path / f"out-{archive}"
        (out / "a").mkdir(parents=True)
        (out / "keep.txt").write_text("kept")  # unpacking merges into an existing folder
        extract(tmp_path / archive, out, progress=False)
        assert (out / "a" / "x.tsv").read_bytes() == b"1\t2\n"
        assert (out / "b.txt").read_bytes() == PAYLOAD[:1000]
        assert (out / "keep.txt").read_text() == "kept"
    assert not [p for p in tmp_path.iterdir() if ".unpack-" in p.name]


def test_extract_refuses_escaping_members(tmp_path: Path) -> None:
    (tmp_path / "evil.zip").write_bytes(_zip_bytes({"ok.txt": b"fine", "../escaped.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside the target"):
        extract(tmp_path / "evil.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out").exists()  # nothing is published from a refused archive

    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        link = tarfile.TarInfo("data.tsv")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(DownloadError, match="link"):
        extract(tmp_path / "link.tar", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()

    (tmp_path / "cut.zip").write_bytes(_zip_bytes({"big.bin": PAYLOAD})[:-2000])
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract(tmp_path / "cut.zip", tmp_path / "out3", progress=False)
    assert not (tmp_path / "out3").exists()


# ----------------------------------------------------------------------------------------------------
# Manifest and command line


def test_manifest_is_consistent() -> None:
    names = [s.name for s in sources.SOURCES]
    assert len(names) == len(set(names))
    assert {s.group for s in sources.SOURCES} == set(sources.GROUPS)
    for s in sources.SOURCES:
        assert s.dest.split("/")[0] in ("data", "snap")
        assert s.url.startswith(("https://nlp.cs.unc.edu/data/", sources.NLVR_BASE, sources.BERT_BASE, sources.HF_BASE))
        assert all(o.endswith(".tsv") for o in s.outputs) and s.archive == s.dest.endswith(".zip")
    model = sources.select(["pretrained-model"])
    assert [s.url for s in model] == ["https://nlp.cs.unc.edu/data/model_LXRT.pth"]
    assert model[0].dest == "snap/pretrained/model_LXRT.pth"
    assert len(sources.select(["features-coco"])) == 3
    with pytest.raises(ValueError, match="unknown group"):
        sources.select(["vqa2"])


def test_cli_dry_run_lists_groups(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        main(
            [
                "--dry-run",
                "vqa",
                "features-coco",
                "--data-root",
                str(tmp_path / "d"),
                "--base-url",
                "http://mirror.example/lx",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[vqa] vqa/train (missing)" in out and "[features-coco] mscoco_imgfeat/val2014_obj36" in out
    assert "http://mirror.example/lx/lxmert_data/vqa/minival.json" in out
    assert f"unpack -> {tmp_path / 'd' / 'mscoco_imgfeat' / 'val2014_obj36.tsv'}" in out
    assert "[gqa]" not in out and not (tmp_path / "d").exists()
    assert main(["no-such-group"]) == 1
    assert "unknown group" in capsys.readouterr().err


def test_bash_wrapper_lists_groups() -> None:
    res = subprocess.run(
        ["bash", str(ROOT / "run" / "download_data.bash"), "--list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    for group in sources.GROUPS:
        assert f"{group}:" in res.stdout
    assert "mscoco_imgfeat/train2014_obj36" in res.stdout


def test_cli_fetches_and_unpacks_from_mirror(http: Served, tmp_path: Path) -> None:
    tsv = b"COCO_val2014_000000000042\t480\t640\n"
    # The feature zip keeps its member inside a folder, as some released zips do.
    http.put(
        "/mirror/lxmert_data/mscoco_imgfeat/val2014_obj36.zip", _zip_bytes({"mscoco_imgfeat/val2014_obj36.tsv": tsv})
    )
    http.put("/mirror/lxmert_data/vqa/minival.json", b"[]")
    args = [
        "mscoco_imgfeat/val2014_obj36",
        "vqa/minival",
        "--base-url",
        f"{http.base}/mirror",
        "--data-root",
        str(tmp_path / "data"),
        "--no-progress",
        "--retries",
        "0",
    ]
    assert main(args) == 0
    assert (tmp_path / "data" / "mscoco_imgfeat" / "val2014_obj36.tsv").read_bytes() == tsv
    assert (tmp_path / "data" / "vqa" / "minival.json").read_bytes() == b"[]"
    assert sorted(p.name for p in (tmp_path / "data" / "mscoco_imgfeat").iterdir()) == ["val2014_obj36.tsv"]
    requests_made = len(http.log)
    assert main(args) == 0  # everything present: nothing fetched again
    assert len(http.log) == requests_made


# ----------------------------------------------------------------------------------------------------
# The lock file beside the data, and --verify


def _mirror_args(http: Served, root: Path, *names: str) -> list[str]:
    return [*names, "--base-url", f"{http.base}/mirror", "--data-root", str(root), "--no-progress", "--retries", "0"]


def _lock(root: Path) -> dict:
    return json.loads((root / "download.lock.json").read_text())["files"]


def test_completed_downloads_are_recorded_beside_the_data(http: Served, tmp_path: Path) -> None:
    tsv = b"COCO_val2014_000000000042\t480\t640\n" * 50
    http.put("/mirror/lxmert_data/mscoco_imgfeat/val2014_obj36.zip", _zip_bytes({"val2014_obj36.tsv": tsv}))
    http.put("/mirror/lxmert_data/vqa/minival.json", b'[{"question_id": 1}]')
    root = tmp_path / "data"
    assert main(_mirror_args(http, root, "mscoco_imgfeat/val2014_obj36", "vqa/minival")) == 0
    files = _lock(root)
    assert files["data/vqa/minival.json"]["size"] == 20
    assert files["data/vqa/minival.json"]["sha256"] == sha256(b'[{"question_id": 1}]')
    assert files["data/mscoco_imgfeat/val2014_obj36.tsv"]["sha256"] == sha256(tsv)
    assert "data/mscoco_imgfeat/val2014_obj36.zip" in files  # the transfer itself, for --verify's size check


def test_verify_refetches_what_the_server_now_has_in_full(http: Served, tmp_path: Path) -> None:
    full = json.dumps([{"question_id": i, "sent": "x" * 40} for i in range(200)]).encode()
    http.put("/mirror/lxmert_data/vqa/minival.json", full[: len(full) // 3])  # a truncated mirror copy
    root = tmp_path / "data"
    args = _mirror_args(http, root, "vqa/minival")
    assert main(args) == 0
    http.put("/mirror/lxmert_data/vqa/minival.json", full)  # the mirror is repaired
    asked = len(http.log)
    assert main(args) == 0
    assert len(http.log) == asked  # without --verify a present file is trusted
    assert main([*args, "--verify"]) == 0
    assert (root / "vqa/minival.json").read_bytes() == full
    assert _lock(root)["data/vqa/minival.json"]["sha256"] == sha256(full)
    asked = len(http.log)
    assert main([*args, "--verify"]) == 0
    assert (root / "vqa/minival.json").read_bytes() == full
    assert len(http.log) == asked + 1  # one look at the server's size, no transfer


def test_verify_refetches_files_damaged_or_unrecorded_on_disk(http: Served, tmp_path: Path) -> None:
    tsv = b"COCO_val2014_000000000042\t480\t640\n" * 50
    http.put("/mirror/lxmert_data/mscoco_imgfeat/val2014_obj36.zip", _zip_bytes({"val2014_obj36.tsv": tsv}))
    http.put("/mirror/lxmert_data/vqa/minival.json", b"[1, 2, 3]")
    root = tmp_path / "data"
    args = _mirror_args(http, root, "mscoco_imgfeat/val2014_obj36", "vqa/minival")
    assert main(args) == 0
    out = root / "mscoco_imgfeat/val2014_obj36.tsv"
    damaged = bytearray(tsv)
    damaged[100] ^= 0xFF  # same size, one byte flipped
    out.write_bytes(bytes(damaged))
    (root / "download.lock.json").write_text(json.dumps({"files": {
        k: v for k, v in _lock(root).items() if k != "data/vqa/minival.json"}}))
    (root / "vqa/minival.json").write_bytes(b"[1, 2")  # placed by hand: no record of a completed download
    assert main([*args, "--verify"]) == 0
    assert out.read_bytes() == tsv
    assert (root / "vqa/minival.json").read_bytes() == b"[1, 2, 3]"


def test_short_transfer_is_never_recorded_as_done(http: Served, tmp_path: Path) -> None:
    http.put("/mirror/lxmert_data/vqa/minival.json", PAYLOAD)
    http.drop_after = 1_000_000  # the server announces the full Content-Length, then hangs up
    root = tmp_path / "data"
    assert main(_mirror_args(http, root, "vqa/minival")) == 1
    assert not (root / "vqa/minival.json").exists()
    assert not (root / "download.lock.json").exists()
    assert main(_mirror_args(http, root, "vqa/minival")) == 0  # resumes the kept bytes
    assert (root / "vqa/minival.json").read_bytes() == PAYLOAD
    assert _lock(root)["data/vqa/minival.json"]["size"] == len(PAYLOAD)


def test_detector_weights_come_from_a_mirror_into_snap_detector(http: Served, tmp_path: Path) -> None:
    (entry,) = sources.select(["butd-detector"])
    assert entry.url == "https://huggingface.co/unc-nlp/frcnn-vg-finetuned/resolve/main/pytorch_model.bin"
    assert entry.dest == "snap/detector/pytorch_model.bin"
    http.put("/hub/unc-nlp/frcnn-vg-finetuned/resolve/main/pytorch_model.bin", PAYLOAD)
    args = ["butd-detector", "--base-url", f"{http.base}/hub", "--snap-root", str(tmp_path / "snap"), "--no-progress"]
    assert main(args) == 0
    assert (tmp_path / "snap" / "detector" / "pytorch_model.bin").read_bytes() == PAYLOAD
    requests_made = len(http.log)
    assert main(args) == 0  # cached: no second download
    assert len(http.log) == requests_made


def test_pinned_sha256_decides_what_is_already_there(
    http: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: a file of the right size but wrong bytes was kept as "already there" although the manifest
    pins its SHA-256. A copy is trusted unhashed only when its lock record (same SHA-256, size and
    modification time) says it is the verified one; any other copy is hashed first."""
    import lxrt.fetch
    from datatools.entries import FetchConfig, fetch_source

    body = PAYLOAD[:100_000]
    http.put("/mirror/x/f.bin", body)
    entry = sources.Source(name="x/f", group="vqa", path="x/f.bin", dest="data/x/f.bin", base=f"{http.base}/mirror",
                           size=len(body), sha256=sha256(body))
    root = tmp_path / "data"
    cfg = FetchConfig(data_root=root, progress=False, retries=0)
    out = root / "x" / "f.bin"
    hashed: list[Path] = []
    real = lxrt.fetch.file_digests

    def counting(path, *args, **kwargs):
        hashed.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lxrt.fetch, "file_digests", counting)

    fetch_source(entry, cfg)
    assert len(http.log) == 1 and _lock(root)["data/x/f.bin"]["mtime_ns"] == out.stat().st_mtime_ns
    fetch_source(entry, cfg)  # recorded and unchanged: no request, no hashing
    assert len(http.log) == 1 and hashed == []

    damaged = bytearray(body)
    damaged[500] ^= 0xFF  # same size, other bytes: the record no longer matches, so it is hashed
    out.write_bytes(bytes(damaged))
    fetch_source(entry, cfg)
    assert hashed == [out] and len(http.log) == 2 and out.read_bytes() == body

    (root / "download.lock.json").unlink()  # a correct copy placed by hand: hashed once, kept, recorded
    hashed.clear()
    fetch_source(entry, cfg)
    assert hashed == [out] and len(http.log) == 2 and _lock(root)["data/x/f.bin"]["sha256"] == sha256(body)
    fetch_source(entry, cfg)
    assert hashed == [out]

    out.write_bytes(bytes(damaged))  # the wrong bytes placed by hand, no record: fetched again
    (root / "download.lock.json").unlink()
    fetch_source(entry, cfg)
    assert len(http.log) == 3 and out.read_bytes() == body
