# Shared by the run scripts: choose Python, set PYTHONPATH, map the GPU list, start torchrun when
# several processes are asked for. Sourced, not executed.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# backup OUTPUT SCRIPT: keep a copy of the code and the script beside the run, as the original did.
backup() {
    mkdir -p "$1/src"
    cp -r "$REPO"/src/* "$1/src/" 2>/dev/null || true
    cp "$2" "$1/run.bash"
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
