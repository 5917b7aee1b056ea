#!/usr/bin/env bash
# Rank the test gallery with a fine-tuned retrieval model:
#   bash run/flickr30k_test.bash GPU_IDS NAME --test test --load snap/flickr30k/RUN/BEST [--gallery N]
# Writes snap/flickr30k/NAME/test_scores.npy (captions x images) and test_recall.json (R@1/5/10, rsum).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/flickr30k_test.bash GPU_IDS NAME --test SPLIT --load PATH [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/flickr30k/$2
backup "$output" "$0"
launch "$1" tasks.flickr30k --recipe flickr30k_test --tqdm --output "$output" "${@:3}"
