#!/usr/bin/env bash
# Install what the tests need and run them: bash run/test.bash [pytest args...]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
bash run/setup.bash --dev
.venv/bin/ruff check src tests bench tools
PYTHONPATH=src:. .venv/bin/lint-imports --no-cache  # the import rules of pyproject.toml (docs/architecture.md)
# One worker per core of a small machine (TEST_WORKERS=N for another count, 0 for none); tests that share a
# module or session fixture stay on one worker (tests/conftest.py).
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
