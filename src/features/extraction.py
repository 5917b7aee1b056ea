"""Raw images -> region features -> feature store: ``extract_folder`` and its worker processes.

Runs a registered region extractor (:mod:`features.extractors`) on every image, optionally in a pool
of worker processes, and streams the results into a :class:`features.store_writer.StoreWriter`, which
publishes the store atomically. Extractors that split preprocessing from the network (a
``preprocessor`` and ``run(prepared)``, like the ``butd`` detector) are fed batches by a DataLoader
whose workers decode and resize the images, while the model runs once in this process. Work is
checkpointed into ``OUT.partial``: a killed or failed run continues where it stopped when run again.
"""


from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import features.butd  # noqa: F401 - registers the ``butd`` extractor that --extractor offers
from features.extractors import RegionExtractor, Regions, create_extractor
from features.images import (
    DEFAULT_MAX_SIDE,
    IMAGE_EXTENSIONS,
    BadImageError,
    default_ids,
    find_images,
    load_image_bounded,
    to_original_pixels,
)
from features.store import DTYPES, StoreError
from features.store_writer import StoreWriter, partial_path
from features.tsv import RegionRecord, TsvAppender
from lxrt.fileio import atomic_write_text
from lxrt.progress import progress_bar

SKIPPED_SUFFIX = ".skipped.tsv"
CHECKPOINT_SECONDS = 2.0


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


def region_record(img_id: str, img_h: int, img_w: int, regions: Regions) -> RegionRecord:
    """The obj36 TSV record of an image's regions (labels an extractor does not give are zeros)."""
    n = len(regions.boxes)
    zeros_i, zeros_f = np.zeros(n, np.int64), np.zeros(n, np.float32)
    labels = regions.labels
    return RegionRecord(
        img_id=img_id, img_h=img_h, img_w=img_w,
        objects_id=labels.get("objects_id", zeros_i), objects_conf=labels.get("objects_conf", zeros_f),
        attrs_id=labels.get("attrs_id", zeros_i), attrs_conf=labels.get("attrs_conf", zeros_f),
        boxes=np.asarray(regions.boxes, np.float32), features=np.asarray(regions.features, np.float32),
    )  # fmt: skip


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
    tsv_out = TsvAppender(Path(tsv), writer.extra.get("tsv_bytes") if writer.resumed else None) if tsv else None
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
                    tsv_out.add(region_record(img_id, img_h, img_w, regions))
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
