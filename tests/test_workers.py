"""The tests on two pytest-xdist workers (run/test.bash): tests that share a module or session fixture
run on one worker, which builds the fixture once.

Bug caught: the groups silently ignored (pytest 9.2 with pytest-xdist 3.8 drops them), so a module's
fixture is built on both workers and a test that reads a file an earlier test of its module wrote
(test_finetune_e2e's test-mode tests read the fine-tuning test's snapshot) skips on the other worker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED = textwrap.dedent("""

    @pytest.fixture(scope="session")
    def session_thing():
        with open(os.environ["BUILT"], "a") as f:
            f.write("session\\n")
        return 1
""")

MODULE_FILE = textwrap.dedent("""
    import os
    import time

    import pytest


    @pytest.fixture(scope="module")
    def module_thing():
        with open(os.environ["BUILT"], "a") as f:
            f.write("module\\n")
        return 1


    @pytest.mark.parametrize("i", range(6))
    def test_uses_the_module_fixture(module_thing, i):
        time.sleep(0.05)


    @pytest.mark.parametrize("i", range(6))
    def test_free(i):
        time.sleep(0.05)
""")

SESSION_FILE = textwrap.dedent("""
    import time

    import pytest


    @pytest.mark.parametrize("i", range(4))
    def test_uses_the_session_fixture(session_thing, i):
        time.sleep(0.05)
""")


def test_tests_sharing_a_fixture_run_on_one_worker_that_builds_it_once(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text() + SHARED)
    (tests / "test_module.py").write_text(MODULE_FILE)
    for name in ("test_session_a.py", "test_session_b.py"):
        (tests / name).write_text(SESSION_FILE)
    built = tmp_path / "built.txt"
    env = {"PATH": "/usr/bin:/bin", "BUILT": str(built), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "tests"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] .*PASSED (tests/\S+)", proc.stdout)
    assert len(ran) == 20, proc.stdout[-3000:]
    workers = {name: {w for w, nodeid in ran if name in nodeid} for name in ("module_fixture", "session_fixture")}
    assert all(len(w) == 1 for w in workers.values()), (workers, proc.stdout[-3000:])
    assert sorted(built.read_text().split()) == ["module", "session"]  # each built once
    assert len({w for w, nodeid in ran if "test_free" in nodeid}) == 2  # the others are shared out
