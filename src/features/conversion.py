"""Converting an obj36 TSV into a feature store: the work behind ``python -m features.convert`` and
:func:`features.open_store`, streamed (memory does not grow with the TSV) and published atomically."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from features.store import StoreError, store_path_for, tsv_source
from features.store_writer import StoreWriter
from features.tsv import TSVFormatError, normalize_topk, parse_line
from lxrt.fileio import is_disk_full
from lxrt.progress import progress_bar


@dataclass
class ConversionStats:
    """What one conversion produced (``skipped`` when the store was already up to date)."""

    tsv: Path
    store: Path
    images: int = 0
    regions: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    skipped: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _store_estimate(tsv_bytes: int, dtype: str, limit: int | None) -> float:
    """Rough store size: base64 text of float32 -> binary is ~3/4, fp16 halves it again."""
    size = tsv_bytes * 0.75 * (0.5 if dtype == "float16" else 1.0)
    return size if limit is None else min(size, limit * 36 * 2048 * (2 if dtype == "float16" else 4))


def size_text(size: float) -> str:
    """A byte count for a message: ``2.4 GB`` from 1 GB up, else ``37.5 MB`` (at least ``0.1 MB``)."""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{max(size, 1e5) / 1e6:.1f} MB"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def convert_tsv(
    tsv_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    topk: int | None = None,
    dtype: str = "float16",
    progress: bool = True,
) -> ConversionStats:
    """Stream (the first ``topk`` lines of) a TSV into a new store, published atomically.

    ``out_dir`` defaults to ``store_path_for(tsv_path, topk)``. Memory use does not grow with the
    TSV size; an error or a kill leaves any previous store untouched.
    """
    tsv_path = Path(tsv_path)
    limit = normalize_topk(topk)
    out = Path(out_dir) if out_dir is not None else store_path_for(tsv_path, limit)
    source = tsv_source(tsv_path, limit)
    scope = f"first {limit} lines of " if limit else ""
    print(
        f"Converting {scope}{tsv_path} ({source['size'] / 1e9:.2f} GB) into feature store {out} ({dtype})",
        file=sys.stderr,
    )
    start = time.perf_counter()
    writer: StoreWriter | None = None
    bar = progress_bar(
        limit if limit else source["size"],
        tsv_path.name,
        unit="img" if limit else "B",
        enabled=progress,
        leave=True,
        unit_scale=True,
        unit_divisor=1000,
        mininterval=0.5,
    )
    try:
        with open(tsv_path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line or line.isspace():
                    raise TSVFormatError(f"{tsv_path}:{lineno}: empty line")
                rec = parse_line(line, tsv_path, lineno)
                if writer is None:
                    writer = StoreWriter(out, feat_dim=rec.features.shape[1], dtype=dtype, source=source)
                try:
                    writer.add(rec.img_id, rec.img_h, rec.img_w, rec.boxes, rec.features, rec.objects_id,
                               rec.objects_conf, rec.attrs_id, rec.attrs_conf)
                except ValueError as err:
                    raise TSVFormatError(f"{tsv_path}:{lineno}: {err}") from None
                bar.update(1 if limit else len(line))
                if limit is not None and lineno >= limit:
                    break
        if writer is None:
            raise TSVFormatError(f"{tsv_path}: the file holds no lines")
        if tsv_source(tsv_path, limit) != source:
            raise StoreError(f"{tsv_path} changed while it was being converted; run the conversion again")
        images, regions = len(writer), writer.num_regions
        writer.close()
    except BaseException as err:
        if writer is not None:
            writer.abort()
        if is_disk_full(err, out.parent):
            raise StoreError(
                f"no space left on {out.parent} while converting {tsv_path} into {out}; the unfinished store was "
                f"removed{' and the previous one is intact' if out.is_dir() else ''}. The store needs about "
                f"{size_text(_store_estimate(source['size'], dtype, limit))}: free space there and run again"
            ) from err
        raise
    finally:
        bar.close()
    return ConversionStats(
        tsv=tsv_path,
        store=out,
        images=images,
        regions=regions,
        bytes_written=_dir_bytes(out),
        seconds=time.perf_counter() - start,
    )
