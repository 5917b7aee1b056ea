"""What a request brings, checked: the text, the image, the extractor, the detector's label names."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ask.checkpoints import AskError
from features.extractors import RegionExtractor, Regions, available_extractors, create_extractor, to_rgb
from features.images import BadImageError, load_image

DEFAULT_MAX_PIXELS = 40_000_000
VOCAB_FILES = {"objects": "objects_vocab.txt", "attributes": "attributes_vocab.txt"}


_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"  # OSC/DCS/SOS/PM/APC strings
    r"|\x1b[ -/]*[0-~]?",  # other escapes (and a lone ESC)
    re.DOTALL,
)
_STRAY_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def clean_text(text: str, visible: bool = False) -> str:
    """``text`` safe to print on a terminal and to draw: bytes that were not UTF-8 (kept by Python as
    surrogate escapes) become U+FFFD, terminal escape sequences are removed, control whitespace
    becomes a space and other control and format characters (bidi overrides, NUL, ...) are dropped.
    Printable text, accents and non-Latin scripts are kept as they are.

    ``visible``: escape sequences and control characters are shown as ``\\x1b``-style escapes instead
    (for file names in messages, so that the file can still be found).
    """
    if text.isprintable():
        return text
    text = _STRAY_SURROGATE.sub("\ufffd", text)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if visible:
        return "".join(ch if ch == " " or unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1] for ch in text)
    text = _ESCAPE_SEQUENCE.sub("", text)
    return "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C")


def check_text(text: object, what: str = "question") -> str:
    """The text cleaned (``clean_text``) with its spaces collapsed; an empty or non-string one is an
    :class:`AskError`."""
    text = " ".join(clean_text(text).split()) if isinstance(text, str) else ""
    if not text:
        raise AskError(f"empty {what}: type a {what} about the image")
    return text


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
