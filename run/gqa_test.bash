#!/usr/bin/env bash
# Predict with a fine-tuned GQA model: bash run/gqa_test.bash GPU_IDS NAME --test SPLIT --load snap/gqa/RUN/BEST
# Writes snap/gqa/NAME/<split>_predict.* (the evaluation server's format).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/gqa_test.bash GPU_IDS NAME --test SPLIT --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/gqa/$2
backup "$output" "$0"
launch "$1" tasks.gqa --recipe gqa_test --tqdm --output "$output" "${@:3}"
