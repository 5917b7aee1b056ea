#!/usr/bin/env bash
# Predict with a fine-tuned NLVR2 model: bash run/nlvr2_test.bash GPU_IDS NAME --test SPLIT --load snap/nlvr2/RUN/BEST
# Writes snap/nlvr2/NAME/<split>_predict.* (the evaluation server's format).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/nlvr2_test.bash GPU_IDS NAME --test SPLIT --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/nlvr2/$2
backup "$output" "$0"
launch "$1" tasks.nlvr2 --recipe nlvr2_test --tqdm --output "$output" "${@:3}"
