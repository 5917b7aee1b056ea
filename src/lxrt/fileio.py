"""File safety shared by every package: atomic writes, full disks, temp files of killed writers,
directory fsync, and what a file holds.

The ground floor of the project: it imports nothing of it, so any package (and a fork that vendors
``lxrt`` alone) can use it.

A full disk is recognised by ``errno`` (``ENOSPC``, ``EDQUOT``) anywhere in the exception chain, and,
for writers that do not keep the errno (``torch.save`` to a path reports "unexpected pos ..." or
"iostream error"), by the free space left beside the failed write. It becomes a ``DiskFullError``
whose one-line message names the file, the folder, the space needed (when known) and free.

Temp files are named ``.<name>.<host>.<pid>.<n>.tmp``: every atomic write first removes those of its
folder whose writer on this host is gone (``sweep_temp_files``: one directory listing, nothing below).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 64 << 20
"""A write that failed without an errno, with less than this left beside it, ran out of space."""

log = logging.getLogger(__name__)


class DiskFullError(OSError):
    """A write that ran out of disk space; the message names the file, the folder, the space needed
    (when known) and free, and what was kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def _error_chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def free_bytes(folder: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use in ``folder`` (its nearest existing parent), or None."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(
    err: BaseException, folder: str | Path | None, needed: int | None = None, written: int = 0
) -> bool:
    """Whether ``err`` (raised while writing into ``folder``) means the disk is full.

    True when an ``OSError`` in the chain carries ``ENOSPC``/``EDQUOT``. An error without an errno
    (a writer in C++ or Rust that drops it) counts when the space left in ``folder`` -- measured
    before the partial file is removed -- is below ``LOW_SPACE_BYTES`` or below what the write still
    needed (``needed`` bytes in all, ``written`` of them done); ``folder`` None: the errno only.
    Interrupts never count.
    """
    if isinstance(err, DiskFullError) or not isinstance(err, Exception):
        return False
    chain = _error_chain(err)
    if any(isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS for e in chain):
        return True
    if isinstance(err, OSError) and err.errno is not None:
        return False  # another I/O error (permissions, I/O error, ...), reported as it is
    free = None if folder is None else free_bytes(folder)
    if free is None:
        return False
    return free < LOW_SPACE_BYTES or (needed is not None and free < needed - written)


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KB"``; decimal units as ``df -H`` prints them."""
    if abs(n) < 1000:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if abs(value) < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def disk_full_error(
    path: str | Path, needed: int | None = None, at_least: int = 0, kept: str | None = None,
    action: str = "writing", free: int | None = None,
) -> DiskFullError:
    """The ``DiskFullError`` for ``path``: one line naming the file, its folder, the space needed
    (``needed`` bytes, or more than ``at_least``) and ``free`` (default: free now), and ``kept``
    (what is intact; default: whether a previous ``path`` is)."""
    path = Path(path)
    free = free_bytes(path.parent) if free is None else free
    sizes = []
    if needed:
        sizes.append(f"needs about {human_bytes(needed)}")
    elif at_least:
        sizes.append(f"needs more than {human_bytes(at_least)}")
    if free is not None:
        sizes.append(f"{human_bytes(free)} free")
    space = f" ({', '.join(sizes)})" if sizes else ""
    if kept is None:
        kept = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written"
    message = (f"no space left on {path.parent} while {action} {path.name}{space}; {kept}. "
               "Free some space and run again")
    error = DiskFullError(errno.ENOSPC, message)
    error.filename = str(path)
    return error


# --------------------------------------------------------------------------------------------------
# Temp files: recognisable names, removed once their writer is gone.

_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:40] or "host"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.(?P<n>\d+)\.tmp$")
_counter = itertools.count()


def temp_path(path: str | Path) -> Path:
    """A new temp file name beside ``path``: ``.<name>.<host>.<pid>.<n>.tmp``."""
    path = Path(path)
    tail = f".{_HOST}.{os.getpid()}.{next(_counter)}.tmp"
    name = path.name[: 250 - len(tail)]
    return path.with_name(f".{name}{tail}")


def _process_gone(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists under another user (EPERM), or the check is not possible here
        return False
    return False


def sweep_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files in ``folder`` (not below it) left by writers of this host that are gone.

    Only names of the ``temp_path`` pattern are looked at; files of live processes and of other
    hosts (a shared network folder) are left alone. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if os.name != "posix":
        return removed
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMP_RE.match(entry.name)
        if not found or found["host"] != _HOST or not _process_gone(int(found["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                log.info(f"removed {entry.path} ({human_bytes(size)}), left by process {found['pid']} "
                         "which was stopped while writing it")
        except OSError:  # swept by another process first, or not ours to remove: left as it is
            continue
    return removed


# --------------------------------------------------------------------------------------------------
# Writes


def atomic_write(path: str | Path, write: Callable[[Path], None], size_hint: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    A crash at any point leaves the previous ``path`` untouched; the temp file of a killed writer is
    removed by the next writer into the folder (``sweep_temp_files``). A full disk raises
    ``DiskFullError`` (``size_hint``: the bytes the file will take, for its message and its
    recognition when the writer drops the errno).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err, path.parent):
            raise disk_full_error(path, size_hint) from err
        raise
    sweep_temp_files(path.parent)
    tmp = temp_path(path)
    free = free_bytes(path.parent)  # for the message: the failed writer may still hold its file open
    try:
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # left by an earlier process with this pid: ours to replace
            tmp.unlink()
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            written = tmp.stat().st_size
        except OSError:
            written = 0
        full = is_disk_full(err, path.parent, size_hint, written)  # judged before the partial file goes
        tmp.unlink(missing_ok=True)
        if full:
            raise disk_full_error(path, size_hint, at_least=written, free=free) from err
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically (``atomic_write``), newlines as given."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), size_hint=len(data))


def append_text(path: str | Path, text: str) -> None:
    """Append UTF-8 ``text`` to ``path`` (a log); on a full disk the file is cut back to what it held
    before and ``DiskFullError`` is raised, so it never ends in half a line."""
    path = Path(path)
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as err:
        if is_disk_full(err, path.parent, len(data)):
            raise disk_full_error(path, len(data), kept=f"{path.name} was not changed", action="appending to") from err
        raise
    try:
        size = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as err:
            if not is_disk_full(err, path.parent, len(data)):
                raise
            try:
                os.ftruncate(fd, size)
                kept = f"{path.name} holds what it held before"
            except OSError:
                kept = f"{path.name} may end in part of a line"
            raise disk_full_error(path, len(data), kept=kept, action="appending to") from err
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
