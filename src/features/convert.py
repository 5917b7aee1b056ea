"""Convert obj36 TSV files into memory-mapped feature stores (``python -m features.convert --help``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from features.store import DTYPES, StoreError, StoreWriter, store_path_for, store_status, tsv_source
from features.tsv import TSVFormatError, normalize_topk, parse_line
from lxrt.fileio import is_disk_full


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
    bar = tqdm(
        total=limit if limit else source["size"],
        unit="img" if limit else "B",
        unit_scale=True,
        unit_divisor=1000,
        desc=tsv_path.name,
        disable=not progress,
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
                f"{_store_estimate(source['size'], dtype, limit) / 1e9:.1f} GB: free space there and run again"
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


def find_tsvs(data_dir: Path) -> list[Path]:
    """Every ``*_obj36.tsv`` under ``data_dir``."""
    return sorted(data_dir.rglob("*_obj36.tsv"))


def _summary(stats: list[ConversionStats]) -> str:
    header = f"{'store':<48} {'images':>9} {'regions':>11} {'GB':>7} {'time s':>8} {'img/s':>8}"
    lines = [header, "-" * len(header)]
    for s in stats:
        name = str(s.store) if len(str(s.store)) <= 48 else "..." + str(s.store)[-45:]
        if s.skipped:
            lines.append(f"{name:<48} {'up to date, skipped':>46}")
            continue
        lines.append(
            f"{name:<48} {s.images:>9,} {s.regions:>11,} {s.bytes_written / 1e9:>7.2f} "
            f"{s.seconds:>8.1f} {s.images_per_s:>8.0f}"
        )
    done = [s for s in stats if not s.skipped]
    if len(done) > 1:
        images, secs = sum(s.images for s in done), sum(s.seconds for s in done)
        lines.append(
            f"{'total':<48} {images:>9,} {sum(s.regions for s in done):>11,} "
            f"{sum(s.bytes_written for s in done) / 1e9:>7.2f} {secs:>8.1f} {images / max(secs, 1e-9):>8.0f}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        prog="python -m features.convert",
        description="Convert Faster R-CNN obj36 TSV files into memory-mapped feature stores, written "
        "next to each TSV as <name>.store/ (or <name>.top<K>.store/ with --topk). Tasks open them "
        "with features.store.open_store, which also converts on first use.",
    )
    parser.add_argument("tsv", nargs="*", type=Path, help="TSV files to convert")
    parser.add_argument("--all", action="store_true", help="convert every *_obj36.tsv under --data-dir")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where --all looks")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="stored feature dtype")
    parser.add_argument("--topk", type=int, default=None, help="convert only the first K lines of each TSV")
    parser.add_argument("--out", type=Path, default=None, help="store directory to write (one TSV only)")
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date store exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tsvs: list[Path] = list(args.tsv)
    if args.all:
        found = find_tsvs(args.data_dir)
        if not found:
            parser.error(f"--all: no *_obj36.tsv files under {args.data_dir}")
        tsvs += [p for p in found if p not in tsvs]
    if not tsvs:
        parser.error("give TSV files to convert, or --all")
    if args.out is not None and len(tsvs) != 1:
        parser.error("--out needs exactly one TSV")
    if args.topk is not None and args.topk <= 0:
        parser.error("--topk must be a positive number of lines")
    for tsv in tsvs:
        if not tsv.is_file():
            parser.error(f"no such TSV file: {tsv}")

    stats: list[ConversionStats] = []
    for tsv in tsvs:
        out = args.out or store_path_for(tsv, args.topk)
        if not args.force and store_status(out, tsv, args.dtype, args.topk) is None:
            print(f"{out} is up to date (use --force to rebuild)", file=sys.stderr)
            stats.append(ConversionStats(tsv=tsv, store=out, skipped=True))
            continue
        try:
            stats.append(convert_tsv(tsv, out, topk=args.topk, dtype=args.dtype, progress=not args.quiet))
        except (TSVFormatError, StoreError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(_summary(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
