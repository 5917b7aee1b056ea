#!/usr/bin/env bash
# Fine-tune LXMERT on VQA: bash run/vqa_finetune.bash GPU_IDS NAME [flags...]
# Writes snap/vqa/NAME/ (log.log, BEST.pth, LAST.pth, config.json, curves.png).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/vqa_finetune.bash GPU_IDS NAME [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/vqa/$2
backup "$output" "$0"
launch "$1" tasks.vqa --recipe vqa_lxr955 --tqdm --output "$output" "${@:3}"
