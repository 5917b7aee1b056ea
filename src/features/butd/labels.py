"""Visual Genome label names of the detector's 1600 object and 400 attribute classes (``data/vg/``)."""

from __future__ import annotations

import functools
from pathlib import Path

VG_DIR = Path(__file__).resolve().parents[3] / "data" / "vg"


@functools.lru_cache(maxsize=4)
def _read(path: Path, expected: int) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read the Visual Genome label names ({err.strerror})") from None
    if len(lines) != expected:
        raise ValueError(f"{path}: {len(lines)} label lines, expected {expected}")
    # A line may list synonyms ("gray,grey"): the first one names the class.
    return tuple(line.split(",")[0].strip() for line in lines)


def object_names(vg_dir: Path = VG_DIR) -> tuple[str, ...]:
    """The 1600 object class names, index = ``objects_id``."""
    return _read(Path(vg_dir) / "objects_vocab.txt", 1600)


def attribute_names(vg_dir: Path = VG_DIR) -> tuple[str, ...]:
    """The 400 attribute names, index = ``attrs_id``."""
    return _read(Path(vg_dir) / "attributes_vocab.txt", 400)
