#!/usr/bin/env bash
# A local page to ask LXMERT about pictures:
#   bash run/serve.bash [--load snap/vqa/NAME/BEST] [--extractor butd --weights PATH] [--port 7860] [--host [ADDR]]
# Installs Gradio (requirements-serve.txt) into .venv on first use, serves the best photo model under snap/
# (else the demo's, building it with run/demo.bash when snap/ holds no model) unless --load names another
# snapshot, binds to 127.0.0.1 unless --host is given, and prints the address. --help lists every option.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
if [ ! -x .venv/bin/python ]; then
    bash run/setup.bash
fi
stamp=".venv/.installed-serve-$(cat requirements-serve.txt | sha1sum | cut -c1-12)"
pinned="$(sed -n 's/^gradio==//p' requirements-serve.txt)"
if [ ! -f "$stamp" ] && .venv/bin/python -c "import gradio, sys; sys.exit(gradio.__version__ != '$pinned')" 2>/dev/null; then
    touch "$stamp"  # already there (run/setup.bash --dev installs it for the tests)
fi
if [ ! -f "$stamp" ]; then
    echo "installing the page's dependencies (requirements-serve.txt) into .venv"
    # torch pinned as a constraint: nothing here may replace the installed build.
    constraint="$(mktemp)"
    trap 'rm -f "$constraint"' EXIT
    .venv/bin/python -c "import torch; print('torch==' + torch.__version__)" > "$constraint"
    .venv/bin/python -m pip install -q -r requirements-serve.txt -c "$constraint"
    touch "$stamp"
fi
case " $* " in
    *" --load "* | *" --load="* | *" --help "* | *" -h "*) ;;
    *) if [ -z "$(find snap -name BEST.pth -print -quit 2>/dev/null)" ]; then
           echo "no model under snap/: building the demo's with bash run/demo.bash (a few minutes, once);"
           echo "for photos: bash run/download_data.bash butd-detector vqa-model"
           bash run/demo.bash
       fi ;;
esac
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" \
    GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
source run/_launch.sh  # PYTHON (the .venv one) and PYTHONPATH=src
exec "$PYTHON" -m ask.serve "$@"
