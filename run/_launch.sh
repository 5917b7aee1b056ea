# Shared by the run scripts: choose Python, set PYTHONPATH, map the GPU list, start torchrun when
# several processes are asked for. Sourced, not executed.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# backup OUTPUT SCRIPT: keep a copy of the code and the script beside the run, as the original did.
# A full disk ends here in one line (what the copy needs, what is free).
backup() {
    local err dir need free
    if err=$(mkdir -p "$1/src" 2>&1); then
        cp -r "$REPO"/src/* "$1/src/" 2>/dev/null || true
        err=$(cp "$2" "$1/run.bash" 2>&1) && return 0
    fi
    dir="$1"
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    need=$(du -sk "$REPO/src" "$2" 2>/dev/null | awk '{s += $1} END {print s}')
    free=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$free" ] && [ -n "$need" ] && [ "$free" -lt "$need" ]; then
        echo "error: no space left on $1 while copying the code beside the run (src/, run.bash: needs about" \
            "${need} KB, ${free} KB free). Free some space and run again" >&2
    else
        echo "error: cannot copy the code beside the run into $1: ${err%%$'\n'*}" >&2
    fi
    exit 1
}

# launch GPU_IDS MODULE ARGS...: one process, or torchrun with one process per GPU when
# --multiGPU is given with several ids. NPROC_PER_NODE overrides the count (e.g. gloo on CPU);
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT select a multi-machine run.
launch() {
    local gpus="$1" module="$2"
    shift 2
    local nproc=1
    if has_gpu; then
        export CUDA_VISIBLE_DEVICES="$gpus"
        case " $* " in *" --multiGPU "*) nproc=$(echo "$gpus" | tr ',' '\n' | grep -c .) ;; esac
    fi
    nproc="${NPROC_PER_NODE:-$nproc}"
    if [ "$nproc" -gt 1 ] || [ "${NNODES:-1}" -gt 1 ]; then
        exec "$PYTHON" -m torch.distributed.run \
            --nproc_per_node="$nproc" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
            --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
            -m "$module" "$@"
    fi
    exec "$PYTHON" -m "$module" "$@"
}
