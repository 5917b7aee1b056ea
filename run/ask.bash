#!/usr/bin/env bash
# Ask a trained LXMERT about a picture:
#   bash run/ask.bash IMAGE "QUESTION" [--load snap/vqa/NAME/BEST] [--task vqa|gqa|demo]
#       [--extractor butd --weights PATH] [--out PNG]          (--help lists every option)
#   bash run/ask.bash LEFT RIGHT "STATEMENT" --load snap/nlvr2/NAME/BEST          (NLVR2: true/false)
# Prints the top-5 answers with probabilities and writes a PNG (the image with the regions that matter
# most, the question, the answers) into <run folder>/ask/. Without --load it uses the demo's model
# (snap/demo/), building it with run/demo.bash first when it is missing.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
case " $* " in
    *" --load "* | *" --load="* | *" --help "* | *" -h "*) ;;
    *) if [ ! -f snap/demo/BEST.pth ]; then
           echo "no demo model in snap/demo/: building it with bash run/demo.bash (a few minutes, once)"
           bash run/demo.bash
       fi ;;
esac
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
source run/_launch.sh  # PYTHON (the .venv one) and PYTHONPATH=src
exec "$PYTHON" -m ask "$@"
