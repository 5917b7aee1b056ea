#!/usr/bin/env bash
# The easy-VQA demo on the CPU: bash run/demo.bash [--epochs N] [--batchSize B] [--lr LR] [--hidden H]
#     [--max-minutes M] [--workers W] [--output DIR] [--fresh | --resume]   (--help lists every knob)
# The recipe's epochs always run (the result does not depend on the machine's speed); --max-minutes is an
# opt-in budget that may cut the training short, which the run then says in its last lines and metrics.json.
# Extracts region features from the raw easy-VQA images, trains a small LXMERT from scratch, predicts the
# test split and writes snap/demo/ (metrics.json, curves.png, predictions.png, test_predict.json, BEST.pth,
# run.log). A rerun with the same settings reuses the features and the snapshot.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
start=$SECONDS

# Set up .venv only when it cannot run the demo yet (run/setup.bash installs the requirements).
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c "import easy_vqa, matplotlib, numpy, PIL, tokenizers, torch, tqdm" \
        2>/dev/null; }; then
    echo "setting up the environment: bash run/setup.bash"
    bash run/setup.bash
    echo "environment ready in $((SECONDS - start)) s"
fi

# numpy's threaded BLAS is slower than one thread on the small matrices of feature extraction, and
# OpenMP threads that spin while waiting make torch crawl on a shared machine; torch's thread count is
# chosen by the demo itself (--threads).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
    MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
source run/_launch.sh  # PYTHON (the .venv one) and PYTHONPATH=src
# The last lines are the demo's summary (and, for a run that --max-minutes cut short, a banner saying so).
exec "$PYTHON" -m demo.run_demo "$@"
