"""Counting the reads of tensor values into Python, the host synchronisations of a GPU loop.

On a GPU ``torch.cuda.set_sync_debug_mode`` reports every synchronising call; on any device
``HostSyncCounter`` counts the Tensor methods that read values into Python (``.item()``,
``.tolist()``, ``.cpu()``, ``.numpy()``, ``float(t)``, ``int(t)``, ``bool(t)``), each of which
waits for the device when the tensor lives there. Work done while ``paused()`` (input batches
being built on the host) is not counted.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


class HostSyncCounter:
    """``with HostSyncCounter() as c: ...`` then ``c.total`` / ``c.calls`` (method -> count)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._paused = 0
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not self._paused:
                self.calls[name] += 1
            return method(tensor, *args, **kwargs)

        return counted

    def __enter__(self) -> HostSyncCounter:
        for name in READS:
            self._saved[name] = torch.Tensor.__dict__.get(name)
            setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
        self._saved = {}

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def pausing(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with counting paused while it runs (e.g. a collate function)."""

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self.paused():
                return fn(*args, **kwargs)

        return run


@contextlib.contextmanager
def cuda_sync_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect CUDA's synchronisation warnings (``set_sync_debug_mode("warn")``) of the block."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode(previous)
