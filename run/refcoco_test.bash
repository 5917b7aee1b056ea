#!/usr/bin/env bash
# Predict with a fine-tuned model: bash run/refcoco_test.bash GPU_IDS NAME [--dataset refcoco+] --test val,testA,testB --load snap/refcoco/RUN/BEST
# Writes snap/refcoco/NAME/<split>_predict.json ([{"box", "index", "ref_id", "sent_id"}, ...]) and <split>_accuracy.json.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/refcoco_test.bash GPU_IDS NAME [--dataset DATASET] --test SPLITS --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/refcoco/$2
backup "$output" "$0"
launch "$1" tasks.refcoco --recipe refcoco_test --tqdm --output "$output" "${@:3}"
