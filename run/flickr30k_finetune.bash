#!/usr/bin/env bash
# Fine-tune LXMERT for Flickr30k image-text retrieval: bash run/flickr30k_finetune.bash GPU_IDS NAME [flags...]
# Writes snap/flickr30k/NAME/ (log.log, BEST.pth chosen by valid rsum, LAST.pth, config.json, curves.png).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/flickr30k_finetune.bash GPU_IDS NAME [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/flickr30k/$2
backup "$output" "$0"
launch "$1" tasks.flickr30k --recipe flickr30k_lxr955 --tqdm --output "$output" "${@:3}"
