"""The one progress bar of the project (tqdm), for bytes and for counted items."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(
    total: int | None = None,
    desc: str = "",
    *,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    leave: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A bar over ``total`` items (``unit="B"``: bytes, shown as KiB/MiB/GiB); ``enabled=False``: silent."""
    if unit == "B":
        kwargs.setdefault("unit_scale", True)
        kwargs.setdefault("unit_divisor", 1024)
    return tqdm(
        total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=not enabled,
        dynamic_ncols=True, **kwargs,
    )  # fmt: skip
