#!/usr/bin/env bash
# Extract region features from raw images into a feature store (see --help), e.g.
#   bash run/extract_features.bash path/to/images data/my_imgfeat/train.store --extractor grid+object
#   bash run/extract_features.bash images.txt out.store --workers 4 --skip-bad
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m features.extract "$@"
