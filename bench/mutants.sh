#!/usr/bin/env bash
# Mutation testing (mutmut), one module at a time with one worker: bash bench/mutants.sh [MODULE...] [--list]
# Installs the test dependencies (mutmut included) into .venv first. Slow: not part of CI.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
bash run/setup.bash --dev
export OMP_NUM_THREADS=1
exec .venv/bin/python bench/mutants.py "$@"
