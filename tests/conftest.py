"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


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
