"""Convert obj36 TSV files into memory-mapped feature stores (``python -m features.convert --help``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from features.conversion import ConversionStats, convert_tsv
from features.store import DTYPES, StoreError, store_path_for, store_status
from features.tsv import TSVFormatError


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
        "with features.open_store, which also converts on first use.",
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
