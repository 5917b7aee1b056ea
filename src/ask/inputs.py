"""What a request brings, checked: the text, the image, the extractor, the detector's label names."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ask.checkpoints import AskError
from features.extract import BadImageError, load_image
from features.extractors import RegionExtractor, Regions, available_extractors, create_extractor, to_rgb

DEFAULT_MAX_PIXELS = 40_000_000
VOCAB_FILES = {"objects": "objects_vocab.txt", "attributes": "attributes_vocab.txt"}


def check_text(text: object, what: str = "question") -> str:
    """The stripped text; an empty or non-string one is an :class:`AskError`."""
    if not isinstance(text, str) or not text.strip():
        raise AskError(f"empty {what}: type a {what} about the image")
    return " ".join(text.split())


def read_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB image from a path, a PIL image or an (H, W[, C]) uint8 array.

    Unreadable files and images of more than ``max_pixels`` pixels are :class:`AskError` (the size
    is checked from the header, before decoding).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as probe:
                size = probe.size
        except Exception:  # load_image below says what is wrong with the file
            size = (0, 0)
        _check_size(size, max_pixels, str(path))
        try:
            return load_image(path)
        except BadImageError as err:
            raise AskError(str(err)) from None
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise AskError(
                f"an image array must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {image.dtype} {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise AskError(f"expected an image file or picture, got {type(image).__name__}")
    _check_size(image.size, max_pixels, "the image")
    if image.width < 1 or image.height < 1:
        raise AskError(f"the image has zero size ({image.width}x{image.height})")
    try:
        return to_rgb(image)
    except ValueError as err:
        raise AskError(f"the image: {err}") from None


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise AskError(
            f"{what} is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:.0f} (scale it down)"
        )


def build_extractor(name: str, options: Mapping[str, Any], plugins: Sequence[str] = ()) -> RegionExtractor:
    """A registered extractor; ``plugins`` are imported first, and an unknown ``name`` is looked
    for in a module ``features.<name>`` before giving up."""
    for module in plugins:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise AskError(f"cannot import plugin {module!r}: {err}") from None
    if name not in available_extractors() and name.isidentifier():
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"features.{name}")
    try:
        return create_extractor(name, **dict(options))
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        raise AskError(f"extractor {name!r}: {err}") from None


def read_vocab(path: Path) -> list[str]:
    """One label per line; of ``name,alias,...`` the first name."""
    return [line.split(",")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]


def region_labels(regions: Regions, vocab_dirs: Sequence[Path]) -> list[str] | None:
    """``"attribute object"`` per region from a detector's ids and the Visual Genome label files
    (the first of ``vocab_dirs`` holding them); None when the regions carry no ids or no file is found."""
    objects = getattr(regions, "objects_id", None)
    if objects is None:
        return None
    folder = next((d for d in vocab_dirs if (d / VOCAB_FILES["objects"]).is_file()), None)
    if folder is None:
        return None
    names = read_vocab(folder / VOCAB_FILES["objects"])
    attrs = getattr(regions, "attrs_id", None)
    attr_names = (
        read_vocab(folder / VOCAB_FILES["attributes"]) if (folder / VOCAB_FILES["attributes"]).is_file() else []
    )
    labels = []
    for i, obj in enumerate(np.asarray(objects).tolist()):
        label = names[obj] if 0 <= obj < len(names) else f"class {obj}"
        if attrs is not None and attr_names:
            a = int(np.asarray(attrs)[i])
            if 0 <= a < len(attr_names):
                label = f"{attr_names[a]} {label}"
        labels.append(label)
    return labels
