"""Raw images -> region features -> feature store (``python -m features.extract --help``).

Reads a folder of images (recursively, by extension) or a text file listing image paths, runs a
registered region extractor (:mod:`features.extractors`) on every image, optionally in a pool of
worker processes, and streams the results into a :class:`features.store_writer.StoreWriter`, which
publishes the store atomically. Image ids default to the file stem.

Extractors that split preprocessing from the network (a ``preprocessor`` and ``run(prepared)``, like
the ``butd`` detector) are fed batches by a DataLoader whose workers decode and resize the images,
while the model runs once in this process. Work is checkpointed into ``OUT.partial``: a killed or
failed run continues where it stopped when the same command is run again. Images larger than
``max_side`` are downscaled while decoding (boxes are still given in original pixels).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

import features.butd  # noqa: F401 - registers the ``butd`` extractor that --extractor offers
from features.extractors import RegionExtractor, Regions, available_extractors, create_extractor, to_rgb
from features.store import DTYPES, StoreError
from features.store_writer import PARTIAL_SUFFIX, StoreWriter, partial_path
from features.tsv import RegionRecord, format_record
from lxrt.fileio import atomic_write_text, fsync_dir
from lxrt.progress import progress_bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKIPPED_SUFFIX = ".skipped.tsv"
DEFAULT_MAX_SIDE = 4096  # longer image side kept when decoding; larger images are downscaled
CHECKPOINT_SECONDS = 2.0
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class BadImageError(ValueError):
    """An image file that cannot be decoded into RGB pixels."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB image (see :func:`features.extractors.to_rgb`).

    Raises :class:`BadImageError` naming the file for a missing, empty, unreadable or truncated
    file, a broken symbolic link, a zero-size image, or a pixel mode without a sound RGB reading.
    """
    return load_image_bounded(path, None)[0]


def load_image_bounded(path: str | os.PathLike, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Like :func:`load_image`, but an image whose longer side exceeds ``max_side`` is downscaled while
    decoding (JPEGs are decoded at a reduced scale, so memory stays bounded). Returns the image and the
    original upright size (width, height)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError(path, f"broken symbolic link (it points to {os.readlink(path)}, which does not exist)")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadImageError(path, f"cannot read the file ({err.strerror or err})") from None
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes), expected an image")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if opened.getexif().get(0x0112) in _ROTATING_ORIENTATIONS:
                width, height = height, width
            if max_side and max(opened.size) > max_side and opened.format == "JPEG":
                shrink = max_side / max(opened.size)
                opened.draft("RGB", (math.ceil(opened.width * shrink), math.ceil(opened.height * shrink)))
            opened.load()  # decode now: truncation only shows up here
            image = ImageOps.exif_transpose(opened)  # cameras store rotation in EXIF; detectors expect upright
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        raise BadImageError(path, f"not a readable image ({type(err).__name__}: {err})") from None
    if image.width < 1 or image.height < 1:
        raise BadImageError(path, f"image has zero size ({image.width}x{image.height})")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    try:
        return to_rgb(image), (width, height)
    except ValueError as err:
        raise BadImageError(path, str(err)) from None


def find_images(source: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image paths from a folder (recursive, sorted, by case-insensitive extension), a single image,
    or a text file listing one path per line (blank lines and ``#`` comments ignored; relative
    paths are relative to the list file's folder)."""
    source = Path(source)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if source.is_dir():
        # A broken symbolic link is listed too: it fails (or is skipped) by name instead of vanishing.
        found = sorted(
            p
            for p in source.rglob("*")
            if p.suffix.lower() in exts and (p.is_file() or (p.is_symlink() and not p.exists()))
        )
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


# ---- per-image work (runs in worker processes when workers > 1) ------------------------------------

Result = tuple[Regions | None, tuple[int, int], str | None]  # regions, (height, width), bad-image reason

_worker_extractor: RegionExtractor | None = None
_worker_max_side: int | None = None
_worker_error: str | None = None


def _import_plugins(plugins: Sequence[str]) -> None:
    for module in plugins:
        importlib.import_module(module)


def _build(extractor: str | RegionExtractor, options: dict[str, Any]) -> RegionExtractor:
    return create_extractor(extractor, **options) if isinstance(extractor, str) else extractor


def _init_worker(
    extractor: str | RegionExtractor, options: dict[str, Any], plugins: Sequence[str], max_side: int | None
) -> None:
    global _worker_extractor, _worker_max_side, _worker_error
    _worker_max_side = max_side
    try:
        _import_plugins(plugins)
        _worker_extractor = _build(extractor, options)
    except Exception as err:  # raised from the first task: a failing initializer would be restarted forever
        _worker_error = f"worker process could not build extractor {extractor!r}: {type(err).__name__}: {err}"


def to_original_pixels(regions: Regions, loaded: tuple[int, int], original: tuple[int, int]) -> Regions:
    """Regions of an image decoded at ``loaded`` (width, height) with boxes mapped to ``original``."""
    if loaded == original:
        return regions
    sx, sy = original[0] / loaded[0], original[1] / loaded[1]
    boxes = np.asarray(regions.boxes, dtype=np.float64) * np.asarray([sx, sy, sx, sy])
    boxes = np.minimum(np.maximum(boxes, 0.0), np.asarray(original * 2, dtype=np.float64)).astype(np.float32)
    return Regions(boxes, regions.features, **regions.labels)


def _run_one(extractor: RegionExtractor, path: Path, max_side: int | None = None) -> Result:
    """Regions and (height, width) of one image, or the reason it is a bad image."""
    try:
        image, original = load_image_bounded(path, max_side)
    except BadImageError as err:
        return None, (0, 0), err.reason
    try:
        regions = extractor(image)
        regions.check(image.width, image.height, extractor.feat_dim)
    except Exception as err:
        # Not the image's fault as far as we know: stop rather than silently skip every image.
        raise RuntimeError(f"{path}: extractor {extractor.name!r} failed: {type(err).__name__}: {err}") from err
    return to_original_pixels(regions, image.size, original), (original[1], original[0]), None


def _worker_run(path: Path) -> Result:
    if _worker_error is not None:
        raise RuntimeError(_worker_error)
    assert _worker_extractor is not None, "worker used before _init_worker"
    return _run_one(_worker_extractor, path, _worker_max_side)


def _results(
    extractor: str | RegionExtractor,
    options: dict[str, Any],
    paths: Sequence[Path],
    workers: int,
    plugins: Sequence[str],
    max_side: int | None = None,
    start_method: str | None = None,
) -> Iterator[Result]:
    """Per-image results in input order, from this process or a pool of ``workers`` processes."""
    if workers <= 1:
        built = _build(extractor, options)
        for path in paths:
            yield _run_one(built, path, max_side)
        return
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    ctx = multiprocessing.get_context(start_method)
    initargs = (extractor, options, tuple(plugins), max_side)
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        yield from pool.imap(_worker_run, paths, chunksize=chunk)


# ---- batched extractors: decoding in DataLoader workers, the network here -----------------------------


def is_batched(extractor: object) -> bool:
    """Whether ``extractor`` splits preprocessing (``preprocessor``) from the network (``run``)."""
    return callable(getattr(extractor, "preprocessor", None)) and callable(getattr(extractor, "run", None))


class _PreparedImages:
    """Map-style dataset: index -> (index, prepared input or None, loaded size, original size, reason)."""

    def __init__(self, paths: Sequence[Path], preprocessor: Any, max_side: int | None) -> None:
        self.paths, self.preprocessor, self.max_side = list(paths), preprocessor, max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, tuple[int, int], tuple[int, int], str | None]:
        try:
            image, original = load_image_bounded(self.paths[i], self.max_side)
        except BadImageError as err:
            return i, None, (0, 0), (0, 0), err.reason
        return i, self.preprocessor(image), image.size, original, None


def _as_list(items: list) -> list:
    return items


def _worker_imports(plugins: Sequence[str], _worker_id: int) -> None:
    _import_plugins(plugins)


def _batched_results(
    built: Any,
    paths: Sequence[Path],
    batch: int,
    workers: int,
    plugins: Sequence[str],
    max_side: int | None,
    start_method: str | None = None,
) -> Iterator[Result]:
    """Per-image results in input order: workers decode and preprocess, ``built.run`` sees whole batches."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _PreparedImages(paths, built.preprocessor, max_side),
        batch_size=max(1, batch),
        num_workers=workers if workers > 1 else 0,
        collate_fn=_as_list,
        worker_init_fn=functools.partial(_worker_imports, tuple(plugins)) if workers > 1 else None,
        prefetch_factor=2 if workers > 1 else None,
        multiprocessing_context=multiprocessing.get_context(start_method) if workers > 1 else None,
    )
    for items in loader:
        good = [item for item in items if item[1] is not None]
        try:
            found = built.run([item[1] for item in good]) if good else []
        except Exception as err:
            names = ", ".join(str(paths[item[0]]) for item in good)
            raise RuntimeError(f"{names}: extractor {built.name!r} failed: {type(err).__name__}: {err}") from err
        by_index = {item[0]: regions for item, regions in zip(good, found)}
        for i, prepared, loaded, original, reason in items:
            if prepared is None:
                yield None, (0, 0), reason
                continue
            regions = by_index[i]
            try:
                regions.check(loaded[0], loaded[1], built.feat_dim)
            except ValueError as err:
                raise RuntimeError(f"{paths[i]}: extractor {built.name!r} failed: {err}") from err
            yield to_original_pixels(regions, loaded, original), (original[1], original[0]), None


# ---- outputs ---------------------------------------------------------------------------------------------


class _TsvAppender:
    """obj36 TSV lines appended to ``<tsv>.partial``; ``finish()`` moves the file into place."""

    def __init__(self, path: Path, resume_bytes: int | None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_bytes is None:
            self._f = open(self.partial, "wb")  # noqa: SIM115 - open for the whole extraction
        else:
            self._f = open(self.partial, "r+b")  # noqa: SIM115
            self._f.truncate(int(resume_bytes))
            self._f.seek(0, os.SEEK_END)

    def add(self, img_id: str, img_h: int, img_w: int, regions: Regions) -> None:
        n = len(regions.boxes)
        zeros_i, zeros_f = np.zeros(n, np.int64), np.zeros(n, np.float32)
        labels = regions.labels
        record = RegionRecord(
            img_id=img_id,
            img_h=img_h,
            img_w=img_w,
            objects_id=labels.get("objects_id", zeros_i),
            objects_conf=labels.get("objects_conf", zeros_f),
            attrs_id=labels.get("attrs_id", zeros_i),
            attrs_conf=labels.get("attrs_conf", zeros_f),
            boxes=np.asarray(regions.boxes, np.float32),
            features=np.asarray(regions.features, np.float32),
        )
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


def _input_digest(paths: Sequence[Path], ids: Sequence[str]) -> str:
    h = hashlib.sha1()
    for path, img_id in zip(paths, ids):
        h.update(f"{path}\t{img_id}\n".encode())
    return h.hexdigest()


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
    batch: int = 1,
    skip_bad: bool = False,
    plugins: Sequence[str] = (),
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    progress: bool = True,
    tsv: str | os.PathLike | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    restart: bool = False,
    start_method: str | None = None,
) -> Path:
    """Extract region features of images into a feature store at ``out_dir``; returns its path.

    ``paths``: a folder, a list file or a single image (see :func:`find_images`), or a sequence
    of image paths. ``extractor``: a registered name (built with ``extractor_options``) or an
    extractor object (picklable when ``workers > 1``). ``ids``: one image id per path (default:
    file stems). A bad image raises :class:`BadImageError` naming it; with ``skip_bad`` it is left
    out and listed, with the reason, in ``<out_dir>.skipped.tsv``. Nothing is published unless
    every image was processed; finished images are kept in ``<out_dir>.partial`` and a later call
    with the same settings continues from there (``restart`` starts over). ``tsv``: also write the
    regions as an obj36 TSV. ``batch``: images per forward pass of a batched extractor.
    ``start_method``: how worker processes start (``fork``, ``spawn``, ...; default: the platform's).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if batch < 1 or workers < 0:
        raise ValueError(f"need batch >= 1 and workers >= 0, got batch={batch}, workers={workers}")
    if max_side is not None and max_side < 32:
        raise ValueError(f"max_side must be at least 32 pixels, got {max_side}")
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
        "options": {k: str(v) if isinstance(v, os.PathLike) else v for k, v in options.items()},
        "input": str(Path(paths).resolve()) if from_source else f"{len(image_paths)} listed paths",
        "input_digest": _input_digest(image_paths, image_ids),
        "max_side": max_side,
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(partial_path(out_dir), ignore_errors=True)
    writer = _open_writer(out_dir, built.feat_dim, dtype, source, tsv is not None)
    skipped: list[tuple[str, str]] = [(str(p), r) for p, r in writer.extra.get("skipped", [])]
    tsv_out = _TsvAppender(Path(tsv), writer.extra.get("tsv_bytes") if writer.resumed else None) if tsv else None
    done_paths = {p for p, _ in skipped}
    todo = [(p, i) for p, i in zip(image_paths, image_ids) if i not in writer and str(p) not in done_paths]
    if writer.resumed or skipped:
        print(
            f"Resuming {partial_path(out_dir)}: {writer.resumed} images done, {len(skipped)} skipped, "
            f"{len(todo)} to go",
            file=sys.stderr,
        )
    start = time.perf_counter()
    todo_paths = [p for p, _ in todo]
    if is_batched(built):
        results = _batched_results(built, todo_paths, batch, workers, plugins, max_side, start_method)
    else:
        worker_extractor = built if workers <= 1 else extractor
        results = _results(worker_extractor, options, todo_paths, workers, plugins, max_side, start_method)

    def checkpoint() -> None:
        if tsv_out is not None:
            writer.extra["tsv_bytes"] = tsv_out.flush()
        writer.extra["skipped"] = skipped
        writer.checkpoint()

    # closing() stops the worker pool at once when a bad image or an error ends the loop early;
    # the partial store keeps every image finished before the last checkpoint.
    with contextlib.closing(results):  # type: ignore[type-var]
        try:
            bar = progress_bar(
                len(image_paths),
                f"extract {built.name}",
                unit="img",
                enabled=progress,
                initial=len(image_paths) - len(todo),
                leave=True,
                iterable=results,
            )
            last = time.monotonic()
            for (path, img_id), (regions, (img_h, img_w), reason) in zip(todo, bar):
                if regions is None:
                    if not skip_bad:
                        raise BadImageError(path, f"{reason} (pass --skip-bad / skip_bad=True to leave it out)")
                    skipped.append((str(path), reason or "unknown"))
                    bar.set_postfix(skipped=len(skipped))
                    continue
                writer.add(img_id, img_h, img_w, regions.boxes, regions.features, **regions.labels)
                if tsv_out is not None:
                    tsv_out.add(img_id, img_h, img_w, regions)
                if time.monotonic() - last > CHECKPOINT_SECONDS:
                    checkpoint()
                    last = time.monotonic()
        except BaseException:
            with contextlib.suppress(Exception):
                checkpoint()
            writer.abort()
            if tsv_out is not None:
                tsv_out.close()
            if writer.resumed or len(writer):
                print(
                    f"Kept {len(writer)} finished images in {partial_path(out_dir)}; "
                    "run the same command again to continue",
                    file=sys.stderr,
                )
            raise
    writer.source["skipped"] = len(skipped)
    store = writer.close()
    if tsv_out is not None:
        tsv_out.finish()
    if skip_bad:
        lines = ["path\treason"] + [f"{p}\t{' '.join(r.split())}" for p, r in skipped]
        atomic_write_text(skipped_report_path(out_dir), "\n".join(lines) + "\n")
    seconds = time.perf_counter() - start
    done = len(todo) - (len(skipped) - len(done_paths))
    print(
        f"Extracted {done} images with {built.name!r} ({built.feat_dim}-d regions, {dtype}) into {store} "
        f"in {seconds:.1f} s ({done / max(seconds, 1e-9):.2f} img/s)"
        + (f"; also wrote {tsv}" if tsv else "")
        + (f"; skipped {len(skipped)} bad images, listed in {skipped_report_path(out_dir)}" if skip_bad else ""),
        file=sys.stderr,
    )
    return store


def _open_writer(out_dir: Path, feat_dim: int, dtype: str, source: dict[str, Any], with_tsv: bool) -> StoreWriter:
    """A resumable writer; a partial store made with other settings is set aside with a note."""
    settings = {**source, "tsv": with_tsv}
    try:
        return StoreWriter(out_dir, feat_dim, dtype=dtype, source=settings, resumable=True)
    except StoreError as err:
        if "other settings" not in str(err):
            raise
    print(f"Starting over: {partial_path(out_dir)} was made with other settings", file=sys.stderr)
    shutil.rmtree(partial_path(out_dir), ignore_errors=True)
    return StoreWriter(out_dir, feat_dim, dtype=dtype, source=settings, resumable=True)


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
