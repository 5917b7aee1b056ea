#!/usr/bin/env bash
# Convert obj36 TSV feature files into memory-mapped stores (see --help), e.g.
#   bash run/convert_features.bash --all
#   bash run/convert_features.bash data/mscoco_imgfeat/train2014_obj36.tsv --dtype float32
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m features.convert "$@"
