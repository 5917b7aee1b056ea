#!/usr/bin/env bash
# Fine-tune LXMERT on SNLI-VE: bash run/snli_ve_finetune.bash GPU_IDS NAME [flags...]
# Writes snap/snli_ve/NAME/ (log.log, BEST.pth, LAST.pth, config.json, curves.png).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/snli_ve_finetune.bash GPU_IDS NAME [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/snli_ve/$2
backup "$output" "$0"
launch "$1" tasks.snli_ve --recipe snli_ve_lxr955 --tqdm --output "$output" "${@:3}"
