"""Unpack the released .zip / .tar(.gz) archives safely (``extract``).

Members are unpacked into a temporary folder beside the target and moved in only when the whole
archive was read, so a corrupt archive leaves the target untouched; absolute paths, ``..``
components, links and device entries are refused.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from lxrt.fetch import CHUNK, DownloadError
from lxrt.fileio import fsync_dir
from lxrt.progress import progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm


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
            with progress_bar(sum(i.file_size for i in infos), f"unpack {archive.name}", unit="B",
                              enabled=progress) as bar:
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
            progress_bar(archive.stat().st_size, f"unpack {archive.name}", unit="B", enabled=progress) as bar,
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
    """Unpack a .zip, .tar, .tar.gz/.tgz (or .tar.bz2/.tar.xz) archive into ``out_dir``."""
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
    fsync_dir(out_dir.parent)
    return out_dir
