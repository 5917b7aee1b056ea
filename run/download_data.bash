#!/usr/bin/env bash
# Download the original LXMERT data files by group into data/ and snap/, e.g.
#   bash run/download_data.bash pretrained-model vqa features-coco
#   bash run/download_data.bash butd-detector vqa-model     # the detector and the released VQA model
#   bash run/download_data.bash --list
#   bash run/download_data.bash all --dry-run --base-url https://mirror.example/lxmert
# Every option of `python -m datatools.download --help` passes through. Paths are relative to the
# repository root. Interrupted downloads resume when the same command is run again. The released
# fine-tuned models (vqa-model, gqa-model) are then imported into task snapshots (datatools.hf_import).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m datatools.download "$@"
case " $* " in
    *" --help "* | *" -h "*) exit 0 ;;
esac
exec "$PYTHON" -m datatools.hf_import --if-downloaded "$@"
