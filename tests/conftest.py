"""Fixtures shared by several test files, and how the tests are shared out between pytest-xdist workers."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:  # run/test.bash runs one worker per core: one thread each, not two
    os.environ.setdefault("OMP_NUM_THREADS", "1")

CHEAP_SESSION_FIXTURES = {"demo_args"}
"""Session fixtures that build nothing: their tests need not share a worker."""


def _ours(fixture: object) -> bool:
    """Whether a fixture is the suite's own (defined in a conftest.py or a test file), not pytest's or a plugin's."""
    try:
        name = Path(inspect.getfile(getattr(fixture, "func", None))).name  # type: ignore[arg-type]
    except TypeError:
        return False
    return name == "conftest.py" or name.startswith("test_")


def _shared_fixtures(item: pytest.Item) -> tuple[str | None, str | None]:
    """(the suite's session fixture, the module whose module fixture) ``item`` uses, each None if none."""
    info = getattr(item, "_fixtureinfo", None)
    session = module = None
    for name, defs in (info.name2fixturedefs.items() if info is not None else ()):
        if not defs or not _ours(defs[-1]):
            continue
        if defs[-1].scope == "session" and name not in CHEAP_SESSION_FIXTURES:
            session = name
        elif defs[-1].scope in ("module", "package", "class"):
            module = item.nodeid.split("::")[0]
    return session, module


def worker_groups(items: list[pytest.Item]) -> dict[str, str]:
    """The pytest-xdist group of each test (by node id) that uses a fixture built once per module or per
    session: the module's file, or the session fixture's name (with every module one of its tests shares
    the fixture with). Each such fixture (a trained demo model, a synthetic dataset, a finished run) is
    then built once, not once per worker, and never used from two processes at once. Tests without one
    go to any worker."""
    uses = {item.nodeid: _shared_fixtures(item) for item in items}
    session_of_module = {module: session for session, module in uses.values() if session and module}
    groups = {}
    for nodeid, (session, module) in uses.items():
        group = session or session_of_module.get(module or "") or module
        if group is not None:
            groups[nodeid] = group
    return groups


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    groups = worker_groups(items)
    for item in items:
        if item.nodeid in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


def _demo_args(root: Path) -> list[str]:
    """A demo run on 200 images per split that trains in seconds (well above chance, not perfect)."""
    return [
        "--data-root", str(root / "data"), "--output", str(root / "out"), "--max-images", "200",
        "--epochs", "4", "--batchSize", "32", "--lr", "1e-3", "--hidden", "64", "--max-minutes", "0",
        "--threads", "1", "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def demo_args() -> Callable[[Path], list[str]]:
    return _demo_args


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(root, metrics) of one small demo run: ``root/out`` holds BEST.pth, ``root/data/easy_vqa`` its data."""
    from demo import run_demo

    root = tmp_path_factory.mktemp("demo")
    return root, run_demo.main(_demo_args(root))
