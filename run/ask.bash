#!/usr/bin/env bash
# Ask a trained LXMERT about pictures, as the snapshot's task does (its facts file says which):
#   bash run/ask.bash IMAGE "QUESTION" ["QUESTION" ...] [--load snap/vqa/NAME/BEST | --load demo]
#       [--task vqa|gqa|demo] [--extractor butd --weights PATH] [--out PNG]   (--help lists every option)
#   bash run/ask.bash IMAGE "HYPOTHESIS" --load snap/snli_ve/NAME/BEST            (entailment / neutral / contradiction)
#   bash run/ask.bash LEFT RIGHT "STATEMENT" --load snap/nlvr2/NAME/BEST          (NLVR2: true/false)
#   bash run/ask.bash IMG1 IMG2 IMG3 "CAPTION" --load snap/flickr30k/NAME/BEST    (retrieval: the images ranked)
#   bash run/ask.bash IMAGE "CAPTION 1" "CAPTION 2" --load snap/flickr30k/NAME/BEST   (the captions ranked)
#   bash run/ask.bash IMAGE "EXPRESSION" --load snap/refcoco/NAME/BEST           (the region it names: a box)
# Prints the answers (top-5 with probabilities, true/false, a ranking or a box in pixels) and writes a PNG
# per text (the image with the regions that matter most and the answer) into <run folder>/ask/. Without
# --load it uses the best photo model under snap/ with the detector (bash run/download_data.bash
# butd-detector vqa-model fetches both), else the demo's model, building that with run/demo.bash first
# when snap/ holds no model at all.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
case " $* " in
    *" --load "* | *" --load="* | *" --help "* | *" -h "*) ;;
    *) if [ -z "$(find snap -name BEST.pth -print -quit 2>/dev/null)" ]; then
           echo "no model under snap/: building the demo's with bash run/demo.bash (a few minutes, once);"
           echo "for photos: bash run/download_data.bash butd-detector vqa-model"
           bash run/demo.bash
       fi ;;
esac
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
source run/_launch.sh  # PYTHON (the .venv one) and PYTHONPATH=src
exec "$PYTHON" -m ask "$@"
