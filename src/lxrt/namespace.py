"""Let code written against the original repository sit beside this one on ``sys.path``.

The original's ``src/tasks/`` and ``src/pretrain/`` are folders without ``__init__.py`` (namespace
packages). Python always prefers a regular package of the same name, so once this project's
``src`` is on the path, ``from tasks.vqa_model import VQAModel`` would look only in this project's
``tasks`` and fail. :func:`with_foreign_portions` puts such same-named namespace folders found on
``sys.path`` in front of the package's own folder, so their modules are found first, while this
project's modules stay reachable when no such folder is there (the usual case: nothing changes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def foreign_portions(name: str, own: Iterable[str]) -> list[str]:
    """Folders ``<entry>/<name>`` on ``sys.path`` without ``__init__.py`` (namespace portions), in path order."""
    own_real = {os.path.realpath(p) for p in own}
    found: list[str] = []
    for entry in sys.path:
        folder = os.path.join(entry or os.getcwd(), name)
        real = os.path.realpath(folder)
        if (
            os.path.isdir(folder)
            and not os.path.isfile(os.path.join(folder, "__init__.py"))
            and real not in own_real
            and real not in {os.path.realpath(f) for f in found}
        ):
            found.append(folder)
    return found


def with_foreign_portions(name: str, path: list[str]) -> list[str]:
    """``path`` (a package's ``__path__``) with the same-named namespace folders of ``sys.path`` first."""
    return [*foreign_portions(name, path), *path]
