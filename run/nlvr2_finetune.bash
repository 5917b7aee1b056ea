#!/usr/bin/env bash
# Fine-tune LXMERT on NLVR2: bash run/nlvr2_finetune.bash GPU_IDS NAME [flags...]
# Writes snap/nlvr2/NAME/ (log.log, BEST.pth, LAST.pth, config.json, curves.png).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/nlvr2_finetune.bash GPU_IDS NAME [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/nlvr2/$2
backup "$output" "$0"
launch "$1" tasks.nlvr2 --recipe nlvr2_lxr955 --tqdm --output "$output" "${@:3}"
