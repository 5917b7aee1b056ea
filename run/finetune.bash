#!/usr/bin/env bash
# Fine-tune or test any task with its default recipe: bash run/finetune.bash TASK GPU_IDS NAME [flags...]
# TASK is a module of src/tasks (vqa, gqa, nlvr2, snli_ve, ...); writes snap/TASK/NAME/.
# Pass --recipe NAME for another of the task's recipes (e.g. --recipe snli_ve_test --test test --load PATH).
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: bash run/finetune.bash TASK GPU_IDS NAME [flags...]" >&2; exit 2; fi
source "$(dirname "$0")/_launch.sh"
task=$1
if [ ! -f "$REPO/src/tasks/$task.py" ]; then
    echo "run/finetune.bash: no task module src/tasks/$task.py (tasks: $(cd "$REPO/src/tasks" && grep -l '^def main' *.py | grep -v -e _prepare -e finetune | sed 's/\.py$//' | tr '\n' ' '))" >&2
    exit 2
fi
output=snap/$task/$3
backup "$output" "$0"
launch "$2" "tasks.$task" --tqdm --output "$output" "${@:4}"
