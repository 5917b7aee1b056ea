#!/usr/bin/env bash
# The GPU claims in one command: bash bench/gpu_check.sh [--tiny] [--device cuda:1] [--out FILE] ...
# Prints one JSON and writes bench/results/gpu-<device>.json (see bench/gpu_check.py --help).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$REPO/bench/gpu_check.py" "$@"
