"""Raw images -> region features -> feature store (``python -m features.extract --help``).

Reads a folder of images (recursively, by extension) or a text file listing image paths, runs a
registered region extractor (:mod:`features.extractors`) on every image, optionally in a pool of
worker processes, and streams the results into a :class:`features.store.StoreWriter`, which
publishes the store atomically. Image ids default to the file stem.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm import tqdm

from features.extractors import RegionExtractor, Regions, available_extractors, create_extractor, to_rgb
from features.store import DTYPES, StoreWriter
from lxrt.fileio import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKIPPED_SUFFIX = ".skipped.tsv"


class BadImageError(ValueError):
    """An image file that cannot be decoded into RGB pixels."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB image (see :func:`features.extractors.to_rgb`).

    Raises :class:`BadImageError` naming the file for a missing, empty, unreadable or truncated
    file, a zero-size image, or a pixel mode without a sound RGB reading.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadImageError(path, f"cannot read the file ({err.strerror or err})") from None
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes), expected an image")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: truncation only shows up here
            image = ImageOps.exif_transpose(opened)  # cameras store rotation in EXIF; detectors expect upright
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        raise BadImageError(path, f"not a readable image ({type(err).__name__}: {err})") from None
    if image.width < 1 or image.height < 1:
        raise BadImageError(path, f"image has zero size ({image.width}x{image.height})")
    try:
        return to_rgb(image)
    except ValueError as err:
        raise BadImageError(path, str(err)) from None


def find_images(source: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image paths from a folder (recursive, sorted, by case-insensitive extension), a single image,
    or a text file listing one path per line (blank lines and ``#`` comments ignored; relative
    paths are relative to the list file's folder)."""
    source = Path(source)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not found:
            raise FileNotFoundError(f"{source}: no images with extensions {', '.join(exts)} found (recursively)")
        return found
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such folder or file")
    if source.suffix.lower() in exts:
        return [source]
    paths = []
    with open(source, encoding="utf-8") as f:
        for line in f:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = Path(entry)
                paths.append(path if path.is_absolute() else source.parent / path)
    if not paths:
        raise ValueError(f"{source}: the list file names no images (expected one image path per line)")
    return paths


def default_ids(paths: Sequence[Path]) -> list[str]:
    """File stems as image ids; two files with the same stem are an error naming both."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(
                f"image id {path.stem!r} would be used twice: {seen[path.stem]} and {path}; "
                "rename one or pass explicit ids"
            )
        seen[path.stem] = path
    return list(seen)


def skipped_report_path(out_dir: str | os.PathLike) -> Path:
    """Where the list of skipped images of the store at ``out_dir`` is written."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + SKIPPED_SUFFIX)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, and rename it over ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


# ---- per-image work (runs in worker processes when workers > 1) ------------------------------------

_worker_extractor: RegionExtractor | None = None


def _import_plugins(plugins: Sequence[str]) -> None:
    for module in plugins:
        importlib.import_module(module)


def _build(extractor: str | RegionExtractor, options: dict[str, Any]) -> RegionExtractor:
    return create_extractor(extractor, **options) if isinstance(extractor, str) else extractor


def _init_worker(extractor: str | RegionExtractor, options: dict[str, Any], plugins: Sequence[str]) -> None:
    global _worker_extractor
    _import_plugins(plugins)
    _worker_extractor = _build(extractor, options)


def _run_one(extractor: RegionExtractor, path: Path) -> tuple[Regions | None, tuple[int, int], str | None]:
    """Regions and (height, width) of one image, or the reason it is a bad image."""
    try:
        image = load_image(path)
    except BadImageError as err:
        return None, (0, 0), err.reason
    try:
        regions = extractor(image)
        regions.check(image.width, image.height, extractor.feat_dim)
    except Exception as err:
        # Not the image's fault as far as we know: stop rather than silently skip every image.
        raise RuntimeError(f"{path}: extractor {extractor.name!r} failed: {type(err).__name__}: {err}") from err
    return regions, (image.height, image.width), None


def _worker_run(path: Path) -> tuple[Regions | None, tuple[int, int], str | None]:
    assert _worker_extractor is not None, "worker used before _init_worker"
    return _run_one(_worker_extractor, path)


def _results(
    extractor: str | RegionExtractor,
    options: dict[str, Any],
    paths: Sequence[Path],
    workers: int,
    plugins: Sequence[str],
) -> Iterator[tuple[Regions | None, tuple[int, int], str | None]]:
    """Per-image results in input order, from this process or a pool of ``workers`` processes."""
    if workers <= 1:
        built = _build(extractor, options)
        for path in paths:
            yield _run_one(built, path)
        return
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    ctx = multiprocessing.get_context()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(extractor, options, tuple(plugins))) as pool:
        yield from pool.imap(_worker_run, paths, chunksize=chunk)


# ---- public API --------------------------------------------------------------------------------------


def extract_folder(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    extractor: str | RegionExtractor = "grid+object",
    *,
    extractor_options: dict[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    dtype: str = "float16",
    workers: int = 1,
    skip_bad: bool = False,
    plugins: Sequence[str] = (),
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    progress: bool = True,
) -> Path:
    """Extract region features of images into a feature store at ``out_dir``; returns its path.

    ``paths``: a folder, a list file or a single image (see :func:`find_images`), or a sequence
    of image paths. ``extractor``: a registered name (built with ``extractor_options``) or an
    extractor object (picklable when ``workers > 1``). ``ids``: one image id per path (default:
    file stems). A bad image raises :class:`BadImageError` naming it; with ``skip_bad`` it is left
    out and listed, with the reason, in ``<out_dir>.skipped.tsv``. Nothing is published unless
    every image was processed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    options = dict(extractor_options or {})
    _import_plugins(plugins)
    from_source = isinstance(paths, (str, os.PathLike))
    image_paths = find_images(paths, extensions) if from_source else [Path(p) for p in paths]
    if not image_paths:
        raise ValueError("no images to extract")
    image_ids = default_ids(image_paths) if ids is None else [str(i) for i in ids]
    if len(image_ids) != len(image_paths):
        raise ValueError(f"got {len(image_ids)} ids for {len(image_paths)} images")
    built = _build(extractor, options)
    source = {
        "kind": "images",
        "extractor": built.name,
        "options": options,
        "input": str(Path(paths).resolve()) if from_source else f"{len(image_paths)} listed paths",
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[Path, str]] = []
    start = time.perf_counter()
    results = _results(built if workers <= 1 else extractor, options, image_paths, workers, plugins)
    # closing() stops the worker pool at once when a bad image or an error ends the loop early.
    writer = StoreWriter(out_dir, built.feat_dim, dtype=dtype, source=source)
    # closing() stops the worker pool at once when a bad image or an error ends the loop early;
    # abort() leaves any previous store at out_dir untouched.
    with contextlib.closing(results):
        try:
            bar = tqdm(results, total=len(image_paths), unit="img", desc=f"extract {built.name}", disable=not progress)
            for path, img_id, (regions, (img_h, img_w), reason) in zip(image_paths, image_ids, bar):
                if regions is None:
                    if not skip_bad:
                        raise BadImageError(path, f"{reason} (pass --skip-bad / skip_bad=True to leave it out)")
                    skipped.append((path, reason or "unknown"))
                    bar.set_postfix(skipped=len(skipped))
                    continue
                writer.add(
                    img_id,
                    img_h,
                    img_w,
                    regions.boxes,
                    regions.features,
                    objects_id=regions.objects_id,
                    objects_conf=regions.objects_conf,
                )
        except BaseException:
            writer.abort()
            raise
    writer.source["skipped"] = len(skipped)
    store = writer.close()
    if skip_bad:
        lines = ["path\treason"] + [f"{p}\t{' '.join(r.split())}" for p, r in skipped]
        write_text_atomic(skipped_report_path(out_dir), "\n".join(lines) + "\n")
    seconds = time.perf_counter() - start
    done = len(image_paths) - len(skipped)
    print(
        f"Extracted {done} images with {built.name!r} ({built.feat_dim}-d regions, {dtype}) into {store} "
        f"in {seconds:.1f} s ({done / max(seconds, 1e-9):.0f} img/s)"
        + (f"; skipped {len(skipped)} bad images, listed in {skipped_report_path(out_dir)}" if skip_bad else ""),
        file=sys.stderr,
    )
    return store


# ---- command line ------------------------------------------------------------------------------------


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # plain strings need no quotes


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
        type=_option,
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
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="stored feature dtype (default %(default)s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes decoding and extracting images; 1 = in this process (default %(default)s)",
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
    options = {k: getattr(args, k) for k in ("grid", "patch", "objects", "threshold") if getattr(args, k) is not None}
    options.update(dict(args.option))
    try:
        extract_folder(
            args.input,
            args.out,
            args.extractor,
            extractor_options=options,
            dtype=args.dtype,
            workers=args.workers,
            skip_bad=args.skip_bad,
            plugins=args.plugin,
            extensions=args.ext,
            progress=not args.quiet,
        )
    except (BadImageError, OSError, ValueError, TypeError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
