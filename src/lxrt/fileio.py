"""File safety shared by every package: atomic writes, directory fsync, and what a file holds.

The ground floor of the project: it imports nothing of it, so any package (and a fork that vendors
``lxrt`` alone) can use it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOW_SPACE_BYTES = 64 << 20


class DiskFullError(OSError):
    """A write that ran out of disk space; the message names the folder and what was kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` (raised while writing into ``folder``) means the disk is full.

    ``torch.save`` reports a full disk as "PytorchStreamWriter failed writing file ... file write
    failed" without the errno; that message with little space left in ``folder`` counts too.
    """
    if isinstance(err, DiskFullError):
        return False
    if "No space left on device" in str(err):
        return True
    if isinstance(err, OSError):
        return err.errno in DISK_FULL_ERRNOS
    if isinstance(err, RuntimeError) and ("write failed" in str(err) or "failed writing" in str(err)):
        try:
            return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    A crash at any point leaves the previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err, path.parent):
            before = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written"
            raise DiskFullError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name}; {before}. "
                                "Free some space and run again") from err
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically (``atomic_write``), newlines as given."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------------
# What a file looks like, for the error a loader gives when the file is not what it expects.

_HEAD_BYTES = 4096
LFS_MAGIC = b"version https://git-lfs.github.com/spec"


def _zip_complete(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
        return True
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _safetensors_like(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= size - 8 and head[8:9] == b"{"


def describe_file(path: str | Path) -> str:
    """A short phrase saying what ``path`` holds, judged from its first bytes.

    "an empty file", "an HTML page", "a git-LFS pointer", "a JSON document", "a text file ('...')",
    "a truncated zip archive", "a zip archive", "a pickle", "a safetensors file", "binary data".
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if head.startswith(LFS_MAGIC):
        return "a git-LFS pointer (a small text stub, not the file itself)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive" if _zip_complete(path) else "a truncated zip archive (an interrupted download?)"
    if head[:1] == b"\x80":
        return "a pickle"
    if _safetensors_like(head, size):
        return "a safetensors file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return "an HTML page"
    if text.startswith(b"<?xml"):
        return "an XML document"
    if b"\0" not in head:
        try:
            decoded = head.decode("utf-8")
        except UnicodeDecodeError as err:
            decoded = head[: err.start].decode("utf-8") if err.start > len(head) - 4 else ""
        if decoded.strip():
            if decoded.lstrip()[:1] in ("{", "["):
                return "a JSON document"
            first = " ".join(decoded.split())[:40]
            return f"a text file (starting {first!r})"
    return "binary data of an unknown format"


def not_a(path: str | Path, expected: str) -> str | None:
    """Why ``path`` cannot be ``expected`` ("a PyTorch checkpoint", ...), or None when it may be.

    Only the shapes that are never a checkpoint are reported: empty files, web pages, LFS pointers,
    JSON/text, truncated zips. The message names the file and ends with what to do about it.
    """
    kind = describe_file(path)
    hints = {
        "an empty file": "; the download or save did not finish, fetch or write it again",
        "an HTML page": "; was the download redirected (a login, error or confirmation page)?",
        "an XML document": "; an error answer of the server (e.g. S3 AccessDenied/NoSuchKey)?",
        "a git-LFS pointer (a small text stub, not the file itself)": "; fetch the real file (git lfs pull)",
        "a truncated zip archive (an interrupted download?)": "; download it again",
    }
    if kind in ("a zip archive", "a pickle", "a safetensors file", "binary data of an unknown format"):
        return None
    return f"{path} is {kind}, not {expected}{hints.get(kind, '')}"
