#!/usr/bin/env bash
# Fine-tune LXMERT on referring expressions: bash run/refcoco_finetune.bash GPU_IDS NAME [--dataset refcoco|refcoco+|refcocog] [flags...]
# Writes snap/refcoco/NAME/ (log.log, BEST.pth, LAST.pth, config.json, curves.png); --dataset picks the data folder.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: bash run/refcoco_finetune.bash GPU_IDS NAME [--dataset refcoco|refcoco+|refcocog] [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/refcoco/$2
backup "$output" "$0"
launch "$1" tasks.refcoco --recipe refcoco_lxr955 --tqdm --output "$output" "${@:3}"
