"""Discovery of what task packages declare at import time (recipes, tasks, synthetic data).

A task module registers its recipes, its task class and its synthetic-data generator when it is
imported. ``discover()`` imports every public module of the packages in ``PLUGIN_PACKAGES`` once,
so a recipe is found by name whichever entry point runs.
"""

from __future__ import annotations

import importlib
import pkgutil

PLUGIN_PACKAGES: tuple[str, ...] = ("tasks", "pretrain", "demo")

_done: set[str] = set()


def discover(packages: tuple[str, ...] = PLUGIN_PACKAGES) -> None:
    """Import every module (not starting with ``_``) of ``packages``; import errors propagate."""
    for package in packages:
        if package in _done:
            continue
        try:
            pkg = importlib.import_module(package)
        except ModuleNotFoundError as err:
            if err.name == package:  # a package this installation does not ship
                _done.add(package)
                continue
            raise
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
        _done.add(package)
