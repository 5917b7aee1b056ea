#!/usr/bin/env bash
# Predict with a fine-tuned VQA model: bash run/vqa_test.bash GPU_IDS NAME --test SPLIT --load snap/vqa/RUN/BEST
# Writes snap/vqa/NAME/<split>_predict.* (the evaluation server's format).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/vqa_test.bash GPU_IDS NAME --test SPLIT --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/vqa/$2
backup "$output" "$0"
launch "$1" tasks.vqa --recipe vqa_test --tqdm --output "$output" "${@:3}"
