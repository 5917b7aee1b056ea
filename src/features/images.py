"""Images for the extractors: decoding (EXIF orientation, RGB, a bounded size), finding them in a
folder or a list file, and their default ids."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from features.extractors import Regions, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_MAX_SIDE = 4096  # longer image side kept when decoding; larger images are downscaled
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


def to_original_pixels(regions: Regions, loaded: tuple[int, int], original: tuple[int, int]) -> Regions:
    """Regions of an image decoded at ``loaded`` (width, height) with boxes mapped to ``original``."""
    if loaded == original:
        return regions
    sx, sy = original[0] / loaded[0], original[1] / loaded[1]
    boxes = np.asarray(regions.boxes, dtype=np.float64) * np.asarray([sx, sy, sx, sy])
    boxes = np.minimum(np.maximum(boxes, 0.0), np.asarray(original * 2, dtype=np.float64)).astype(np.float32)
    return Regions(boxes, regions.features, **regions.labels)
