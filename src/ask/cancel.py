"""Stopping a request that nobody waits for any more: a flag checked at every module call.

``with cancellable([model, detector], event): ...`` runs the block with a forward pre-hook on every
submodule of the given ``nn.Module``\\ s; once ``event`` is set, the next module call raises
:class:`Cancelled`, so a detector pass of many seconds stops within one layer. The hooks only read
the flag: the computation of a request that is not cancelled is unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ask.checkpoints import AskError


class Cancelled(AskError):
    """The request was cancelled (a newer question from the same page, or the page was closed)."""


def check(event: threading.Event | None) -> None:
    """Raise :class:`Cancelled` when ``event`` is set."""
    if event is not None and event.is_set():
        raise Cancelled("cancelled: the request was abandoned")


@contextmanager
def cancellable(roots: Iterable[Any], event: threading.Event | None) -> Iterator[None]:
    """Make the module calls of ``roots`` (those that are ``nn.Module``) stop the block once ``event`` is set."""
    if event is None:
        yield
        return

    def hook(module: nn.Module, args: Any) -> None:
        check(event)

    modules = [m for root in roots if isinstance(root, nn.Module) for m in root.modules()]
    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        check(event)
        yield
    finally:
        for handle in handles:
            handle.remove()
