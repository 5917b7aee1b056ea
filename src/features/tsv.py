"""Reader and writer for the Faster R-CNN "obj36" TSV files of the original release.

One image per line, no header, ten tab-separated fields (``FIELDNAMES``). Sizes are plain integers;
the six arrays are base64 of the raw little-endian bytes (int64 ids, float32 confidences, float32
pixel boxes x1 y1 x2 y2, float32 features). The files were written by ``csv.DictWriter``, so lines
end with CRLF; both CRLF and LF are accepted. Lines are parsed by hand (no ``csv`` module) because a
line is ~0.4 MB and the fields never need quoting.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lxrt.fileio import atomic_write, fsync_dir

FIELDNAMES: tuple[str, ...] = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)

# Per-box arrays other than the features: field name -> (dtype, values per box).
_BOX_ARRAYS: dict[str, tuple[np.dtype, int]] = {
    "objects_id": (np.dtype("<i8"), 1),
    "objects_conf": (np.dtype("<f4"), 1),
    "attrs_id": (np.dtype("<i8"), 1),
    "attrs_conf": (np.dtype("<f4"), 1),
    "boxes": (np.dtype("<f4"), 4),
}
_FEATURE_DTYPE = np.dtype("<f4")


class TSVFormatError(ValueError):
    """A TSV line that does not follow the obj36 format; the message names file and line."""


@dataclass
class RegionRecord:
    """One decoded TSV line: N regions of one image, boxes in pixels."""

    img_id: str
    img_h: int
    img_w: int
    objects_id: np.ndarray  # (N,) int64
    objects_conf: np.ndarray  # (N,) float32
    attrs_id: np.ndarray  # (N,) int64
    attrs_conf: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) float32, pixel x1 y1 x2 y2
    features: np.ndarray  # (N, D) float32

    @property
    def num_boxes(self) -> int:
        return int(self.features.shape[0])


def normalize_topk(topk: int | None) -> int | None:
    """``None`` or a negative value (the original's ``-1``) means every line; 0 is refused."""
    if topk is None or topk < 0:
        return None
    if topk == 0:
        raise ValueError("topk must be a positive number of images, or None / -1 for all of them")
    return int(topk)


def _decode_b64(raw: bytes, where: str, name: str) -> bytes:
    # Files written by Python 3 ports of the extractor sometimes hold str(bytes), i.e. b'...'.
    if raw[:2] == b"b'" and raw[-1:] == b"'":
        raw = raw[2:-1]
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as err:
        raise TSVFormatError(f"{where}: field {name!r} is not valid base64 ({err})") from None


def _to_int(raw: bytes, where: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        shown = raw[:40].decode("latin1")
        raise TSVFormatError(f"{where}: field {name!r} must be an integer, got {shown!r}") from None
    if value < 1:
        raise TSVFormatError(f"{where}: field {name!r} must be >= 1, got {value}")
    return value


def parse_line(line: bytes, path: str | os.PathLike, lineno: int) -> RegionRecord:
    """Decode one TSV line (bytes, with or without its line ending); ``lineno`` is 1-based."""
    where = f"{path}:{lineno}"
    parts = line.rstrip(b"\r\n").split(b"\t")
    if len(parts) != len(FIELDNAMES):
        raise TSVFormatError(
            f"{where}: expected {len(FIELDNAMES)} tab-separated fields ({', '.join(FIELDNAMES)}), "
            f"got {len(parts)} (truncated or corrupt line?)"
        )
    field = dict(zip(FIELDNAMES, parts))
    try:
        img_id = field["img_id"].decode("utf-8")
    except UnicodeDecodeError:
        raise TSVFormatError(f"{where}: img_id is not valid UTF-8") from None
    if not img_id:
        raise TSVFormatError(f"{where}: img_id is empty")
    where = f"{where} (img_id {img_id!r})"
    img_h = _to_int(field["img_h"], where, "img_h")
    img_w = _to_int(field["img_w"], where, "img_w")
    n = _to_int(field["num_boxes"], where, "num_boxes")

    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, width) in _BOX_ARRAYS.items():
        data = _decode_b64(field[name], where, name)
        expected = n * width * dtype.itemsize
        if len(data) != expected:
            raise TSVFormatError(
                f"{where}: field {name!r} holds {len(data)} bytes, expected {expected} "
                f"({n} boxes x {width} x {dtype.name})"
            )
        arr = np.frombuffer(data, dtype=dtype)
        arrays[name] = arr.reshape(n, 4) if width == 4 else arr

    data = _decode_b64(field["features"], where, "features")
    row_bytes, rem = divmod(len(data), n)
    if rem or row_bytes == 0 or row_bytes % _FEATURE_DTYPE.itemsize:
        raise TSVFormatError(
            f"{where}: field 'features' holds {len(data)} bytes, expected num_boxes={n} rows of "
            f"float32 values (a multiple of {n * _FEATURE_DTYPE.itemsize} bytes)"
        )
    features = np.frombuffer(data, dtype=_FEATURE_DTYPE).reshape(n, -1)
    return RegionRecord(img_id=img_id, img_h=img_h, img_w=img_w, features=features, **arrays)


def iter_tsv(path: str | os.PathLike, topk: int | None = None) -> Iterator[RegionRecord]:
    """Stream the records of an obj36 TSV, one line in memory at a time.

    ``topk`` keeps only the first ``topk`` lines (``None`` / negative: all). Raises ``TSVFormatError``
    naming the file and line for any malformed line.
    """
    limit = normalize_topk(topk)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line or line.isspace():
                raise TSVFormatError(f"{path}:{lineno}: empty line (expected {len(FIELDNAMES)} fields)")
            yield parse_line(line, path, lineno)
            if limit is not None and lineno >= limit:
                return


def _b64(arr: np.ndarray, dtype: np.dtype) -> bytes:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes())


def format_record(record: RegionRecord) -> bytes:
    """One TSV line, CRLF-terminated like the original ``csv.DictWriter`` output."""
    n = record.num_boxes
    if n < 1:
        raise ValueError(f"image {record.img_id!r}: a record needs at least one region")
    for name, (_, width) in _BOX_ARRAYS.items():
        shape = np.shape(getattr(record, name))
        if int(np.prod(shape)) != n * width:
            raise ValueError(f"image {record.img_id!r}: {name} has shape {shape}, expected {n} x {width}")
    if any(c in record.img_id for c in "\t\r\n"):
        raise ValueError(f"image id {record.img_id!r} contains a tab or line break")
    fields = [
        record.img_id.encode("utf-8"),
        str(int(record.img_h)).encode(),
        str(int(record.img_w)).encode(),
        _b64(record.objects_id, _BOX_ARRAYS["objects_id"][0]),
        _b64(record.objects_conf, _BOX_ARRAYS["objects_conf"][0]),
        _b64(record.attrs_id, _BOX_ARRAYS["attrs_id"][0]),
        _b64(record.attrs_conf, _BOX_ARRAYS["attrs_conf"][0]),
        str(n).encode(),
        _b64(record.boxes, _BOX_ARRAYS["boxes"][0]),
        _b64(record.features, _FEATURE_DTYPE),
    ]
    return b"\t".join(fields) + b"\r\n"


def write_tsv(path: str | os.PathLike, records: Iterable[RegionRecord]) -> int:
    """Write records in the original format, atomically; returns the number of lines written."""
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "wb") as f:
            for record in records:
                f.write(format_record(record))
                count += 1

    atomic_write(path, write)
    return count


class TsvAppender:
    """obj36 TSV records appended to ``<tsv>.partial`` (fsynced on ``flush``, which returns the bytes
    written so far, so a resumed writer can cut the file back to them); ``finish()`` moves the file
    into place."""

    def __init__(self, path: str | os.PathLike, resume_bytes: int | None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_bytes is None:
            self._f = open(self.partial, "wb")  # noqa: SIM115 - open for the whole extraction
        else:
            self._f = open(self.partial, "r+b")  # noqa: SIM115
            self._f.truncate(int(resume_bytes))
            self._f.seek(0, os.SEEK_END)

    def add(self, record: RegionRecord) -> None:
        self._f.write(format_record(record))

    def flush(self) -> int:
        self._f.flush()
        os.fsync(self._f.fileno())
        return self._f.tell()

    def finish(self) -> Path:
        self.flush()
        self._f.close()
        os.replace(self.partial, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def close(self) -> None:
        self._f.close()
