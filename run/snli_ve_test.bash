#!/usr/bin/env bash
# Predict with a fine-tuned SNLI-VE model: bash run/snli_ve_test.bash GPU_IDS NAME --test SPLIT --load snap/snli_ve/RUN/BEST
# Writes snap/snli_ve/NAME/<split>_predict.json ([{"label", "pair_id"}, ...]).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/snli_ve_test.bash GPU_IDS NAME --test SPLIT --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/snli_ve/$2
backup "$output" "$0"
launch "$1" tasks.snli_ve --recipe snli_ve_test --tqdm --output "$output" "${@:3}"
