"""``python -m tasks.export SNAPSHOT [--out FILE]``: a snapshot as safetensors, its facts inside.

``snap/vqa/NAME/BEST.pth`` (original key layout, facts in ``BEST.json`` beside it) becomes
``BEST.safetensors`` with the same tensors and the facts in its metadata.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lxrt import CheckpointError, export_safetensors, resolve_checkpoint
from lxrt.snapshot import SnapshotFactsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.export", description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", help="weights file (PATH, PATH.pth or PATH_LXRT.pth)")
    parser.add_argument("--out", help="the .safetensors file to write (default: beside the snapshot)")
    args = parser.parse_args(argv)
    try:
        out = export_safetensors(resolve_checkpoint(args.snapshot), args.out)
    except (CheckpointError, SnapshotFactsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
