"""``python -m features.extract IMAGES OUT.store``: region features of a folder of images, as a store.

The command line over ``features.extraction.extract_folder`` (the work, its worker processes and
resuming) and ``features.images`` (decoding and finding images): ``--help`` lists every option.
Image ids default to the file stem; a killed run continues where it stopped when run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import features.butd  # noqa: F401 - registers the ``butd`` extractor that --extractor offers
from features.extraction import (  # the command's engine, also offered here under its old names
    CHECKPOINT_SECONDS,
    SKIPPED_SUFFIX,
    extract_folder,
    is_batched,
    region_record,
    skipped_report_path,
)
from features.extractors import available_extractors
from features.images import (
    DEFAULT_MAX_SIDE,
    IMAGE_EXTENSIONS,
    BadImageError,
    find_images,
    load_image_bounded,
)
from features.store import DTYPES
from features.store_writer import PARTIAL_SUFFIX, partial_path

__all__ = [
    "CHECKPOINT_SECONDS", "BadImageError", "build_parser", "extract_folder", "find_images", "is_batched",
    "load_image_bounded", "main", "parse_option", "region_record", "skipped_report_path",
]  # fmt: skip


# ---- command line ------------------------------------------------------------------------------------


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--option`` -> (key, value): the value parsed as JSON when it can be, else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # plain strings need no quotes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m features.extract",
        description="Extract region features from raw images into a memory-mapped feature store "
        "(read with features.store.FeatureStore). Image ids are file stems.",
    )
    parser.add_argument(
        "input",
        help="folder of images (searched recursively), one image, or a text file "
        "listing image paths (one per line, relative to the list file)",
    )
    parser.add_argument("out", help="store directory to create, e.g. data/my_imgfeat/train.store")
    parser.add_argument(
        "--extractor",
        default="grid+object",
        help=f"registered extractor (built in: {', '.join(available_extractors())}; default %(default)s)",
    )
    parser.add_argument("--grid", type=int, help="grid size G for GxG cells (grid, grid+object; default 4)")
    parser.add_argument("--patch", type=int, help="patch side P: each region is resampled to PxP (default 8)")
    parser.add_argument("--objects", type=int, help="object regions per image (grid+object; default 1)")
    parser.add_argument("--threshold", type=int, help="foreground threshold 0-255 (grid+object; default 32)")
    parser.add_argument(
        "--option",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="any other extractor option (value parsed as JSON when it can be); repeatable",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers more extractors, e.g. a detector); repeatable",
    )
    det = parser.add_argument_group("butd detector (--extractor butd)")
    det.add_argument(
        "--weights",
        help="pytorch_model.bin of unc-nlp/frcnn-vg-finetuned (default snap/detector/pytorch_model.bin, "
        "fetched by `bash run/download_data.bash butd-detector`)",
    )
    det.add_argument("--preset", choices=("lxmert", "hf-demo"), help="pre/post-processing (default lxmert)")
    det.add_argument("--device", help="cpu or cuda (default cpu)")
    det.add_argument("--amp", choices=("none", "bf16"), help="bf16 autocast, for GPUs (or bf16 CPUs; default none)")
    det.add_argument("--min-boxes", type=_positive, help="fewest regions per image (default 36)")
    det.add_argument("--max-boxes", type=_positive, help="most regions per image (default 36; e.g. 10-100)")
    det.add_argument(
        "--fast-numerics", dest="fast_numerics", action="store_true", default=None,
        help="fold BatchNorm into the convolutions and run channels-last: 1.3-1.6x faster on a CPU, but rounding "
        "differs from conv-then-BatchNorm, so a near-tied proposal can differ from another implementation's",
    )
    parser.add_argument("--dtype", choices=DTYPES, help="stored feature dtype (default float16, float32 with --tsv)")
    parser.add_argument(
        "--workers",
        type=_non_negative,
        default=min(8, os.cpu_count() or 1),
        help="processes decoding (and, for per-image extractors, extracting) images; 0 or 1 = in this "
        "process (default %(default)s)",
    )
    parser.add_argument(
        "--batch", type=_positive, default=1, help="images per forward pass of a detector (default %(default)s)"
    )
    parser.add_argument("--tsv", help="also write the regions as an obj36 TSV (the original's format) to this file")
    parser.add_argument(
        "--max-side",
        type=_positive,
        default=DEFAULT_MAX_SIDE,
        help="downscale images whose longer side is above this while decoding (default %(default)s)",
    )
    parser.add_argument(
        "--restart", action="store_true", help=f"discard the unfinished OUT{PARTIAL_SUFFIX} of an earlier run"
    )
    parser.add_argument(
        "--ext",
        nargs="+",
        default=list(IMAGE_EXTENSIONS),
        help="image extensions searched in a folder (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help=f"leave out unreadable/truncated/empty images and list them in OUT{SKIPPED_SUFFIX} "
        "(default: stop at the first one)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = ("grid", "patch", "objects", "threshold", "weights", "preset", "device", "amp", "min_boxes", "max_boxes",
             "fast_numerics")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    options.update(dict(args.option))
    dtype = args.dtype or ("float32" if args.tsv else "float16")
    try:
        extract_folder(
            args.input,
            args.out,
            args.extractor,
            extractor_options=options,
            dtype=dtype,
            workers=args.workers,
            batch=args.batch,
            skip_bad=args.skip_bad,
            plugins=args.plugin,
            extensions=args.ext,
            progress=not args.quiet,
            tsv=args.tsv,
            max_side=args.max_side,
            restart=args.restart,
        )
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue from {partial_path(args.out)}", file=sys.stderr)
        return 130
    except (BadImageError, OSError, ValueError, TypeError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
