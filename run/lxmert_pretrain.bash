#!/usr/bin/env bash
# Pretrain LXMERT as the original script did: bash run/lxmert_pretrain.bash GPU_IDS [flags...]
# e.g. bash run/lxmert_pretrain.bash 0,1,2,3 --multiGPU [--tiny]   (flags from the 2nd argument on)
# Writes snap/pretrain/lxmert/ (EpochXX_LXRT.pth, BEST_EVAL_LOSS_LXRT.pth, config.json, run.log).
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: bash run/lxmert_pretrain.bash GPU_IDS [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
output=snap/pretrain/lxmert
backup "$output" "$0"
# The recipe holds the splits, 9/5/5 layers, --fromScratch, batch 256, BertAdam 1e-4, 20 epochs.
launch "$1" pretrain.lxmert_pretrain --recipe lxmert_pretrain \
    --taskMaskLM --taskObjPredict --taskMatched --taskQA --visualLosses obj,attr,feat \
    --wordMaskRate 0.15 --objMaskRate 0.15 --tqdm --output "$output" "${@:2}"
