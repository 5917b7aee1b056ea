"""The task registry: every task registers its class under its name, and shared code asks it.

A task module registers with ``@register_task`` when it is imported; ``task_class(name)`` finds any
task, whichever entry point runs (the task packages are imported on first use, see
``engine.plugins``). Registration is idempotent: ``python -m tasks.X`` imports the module twice
(as ``__main__`` and by its name), and both copies of a class defined in the same file are the same
task. Two different classes claiming one name are an error naming both files.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TypeVar

from engine.plugins import discover
from engine.task import Task

T = TypeVar("T", bound=type[Task])

_TASKS: dict[str, type[Task]] = {}


def _origin(obj: object) -> str:
    try:
        return os.path.realpath(inspect.getfile(obj))  # type: ignore[arg-type]
    except TypeError:
        return repr(obj)


def same_definition(a: object, b: object) -> bool:
    """Whether ``a`` and ``b`` are one definition imported twice (same file, same qualified name)."""
    return a is b or (
        getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None) and _origin(a) == _origin(b)
    )


def register_task(cls: T) -> T:
    """Class decorator: make ``cls`` the task named ``cls.name``."""
    name = cls.name
    known = _TASKS.get(name)
    if known is not None and not same_definition(known, cls):
        raise ValueError(
            f"task {name!r} is registered twice: by {known.__qualname__} ({_origin(known)}) and "
            f"{cls.__qualname__} ({_origin(cls)})"
        )
    if known is None or cls.__module__ != "__main__":  # keep the importable copy
        _TASKS[name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The task registered as ``name`` (or under one of a task's ``aliases``)."""
    if name not in _TASKS:
        discover()
    if name in _TASKS:
        return _TASKS[name]
    for cls in _TASKS.values():
        if name in getattr(cls, "aliases", ()):
            return cls
    raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(_TASKS))}")


def task_names() -> list[str]:
    """Every registered task's name."""
    discover()
    return sorted(_TASKS)


def tasks_where(test: Callable[[type[Task]], bool]) -> list[type[Task]]:
    """The registered tasks for which ``test(cls)`` holds, by name."""
    discover()
    return [_TASKS[n] for n in sorted(_TASKS) if test(_TASKS[n])]
