"""The detector's box operations with torchvision's compiled kernels, the path taken wherever torchvision
imports, compared with the plain torch versions.

torchvision is no dependency of the project, and its PyPI wheels are CUDA builds whose ``_C.so`` needs
libcudart.so.13, libc10_cuda.so and libtorch_cuda.so, which the CPU torch wheel lacks. This test builds,
once, a scratch environment under ``.venv/torchvision-cpu/``: torchvision 0.28.0 unpacked without its
dependencies (it runs on this environment's torch 2.13.0) and three small stand-in libraries with those
names, compiled from ``tests/tvstub/*.c`` (the CPU kernels are torchvision's own; a CUDA call aborts).
``tests/test_butd_ops.py`` then runs in a child process with it on the path, where ``impl="auto"`` means
torchvision everywhere and ``test_torchvision_and_plain_versions_agree`` must pass, not skip.

The test fails when the environment cannot be built; it skips only when the package index cannot be
reached at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUB_SOURCES = REPO / "tests" / "tvstub"
TORCHVISION = "torchvision==0.28.0"  # the release built against torch 2.13
LIBRARIES = {"cudart.c": "libcudart.so.13", "c10_cuda.c": "libc10_cuda.so", "torch_cuda.c": "libtorch_cuda.so"}
OFFLINE = re.compile(
    r"No matching distribution found|Could not find a version|Failed to establish a new connection|"
    r"Temporary failure in name resolution|Network is unreachable|Max retries exceeded|ProxyError|timed out",
    re.IGNORECASE,
)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def build_environment(root: Path) -> Path:
    """``root`` with ``site/`` (torchvision) and ``stub/`` (the stand-in libraries); built once, reused
    while the stub sources are unchanged."""
    sources = b"".join((STUB_SOURCES / name).read_bytes() for name in sorted(os.listdir(STUB_SOURCES)))
    stamp = root / f".complete-{TORCHVISION}-{hashlib.sha256(sources).hexdigest()[:12]}"
    if stamp.is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / "stub").mkdir(parents=True)
    pip = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root / "site"), TORCHVISION])
    if pip.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        output = pip.stdout + pip.stderr
        if OFFLINE.search(output):
            pytest.skip(f"the package index is unreachable, {TORCHVISION} cannot be installed: {output.strip()[-300:]}")
        raise AssertionError(f"pip install {TORCHVISION} failed:\n{output}")
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler (cc/gcc) to build the stand-in CUDA libraries"
    for source, soname in LIBRARIES.items():
        out = root / "stub" / soname
        built = _run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(STUB_SOURCES / source),
                      f"-Wl,-soname,{soname}"])  # fmt: skip
        assert built.returncode == 0, f"compiling {source}:\n{built.stderr}"
    stamp.write_text(TORCHVISION)
    return root


def test_compiled_torchvision_ops_agree_with_the_plain_ones() -> None:
    root = build_environment(REPO / ".venv" / "torchvision-cpu")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(root / "site"), str(REPO / "src")]),
        LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(root / "stub"), os.environ.get("LD_LIBRARY_PATH")])),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    check = "from features.butd import ops; import torchvision; assert ops.torchvision_ops() is not None; "
    probe = _run([sys.executable, "-c", check + "print(torchvision.__version__)"], env=env, cwd=REPO)
    assert probe.returncode == 0, f"torchvision does not load with the stand-in libraries:\n{probe.stderr[-3000:]}"
    assert probe.stdout.startswith("0.28.0"), probe.stdout
    tests = _run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_butd_ops.py"],
                 env=env, cwd=REPO)  # fmt: skip
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert "passed" in summary and "skipped" not in summary, tests.stdout[-3000:]
