"""Each file of a run folder describes one run, whole.

A training run started without ``--resume`` in a folder that holds an earlier run moves that run's
records and weights into ``<output>/previous/`` (replacing an older ``previous/``) and starts its
files anew. A resumed run keeps them, and ``log.log`` loses the lines of the epochs it re-runs.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from lxrt.fileio import atomic_write

PREVIOUS_DIR = "previous"
RUN_RECORDS = ("log.log", "run.log", "steps.jsonl", "history.json", "curves.png", "checkpoint.pt", "tb")
RUN_PATTERNS = ("*.pth", "*.safetensors", "*_predict.json", "*_predict.csv", "*_metrics.json", "*_missing.txt")
_EPOCH_LINE = re.compile(r"^Epoch (\d+):")


def earlier_run_files(out: Path) -> list[Path]:
    """What an earlier run left in ``out`` (records, weights, predictions); the run script's code
    backup (``src/``, ``run.bash``) and ``config.json`` are not included."""
    if not out.is_dir():
        return []
    found = [out / name for name in RUN_RECORDS if (out / name).exists()]
    for pattern in RUN_PATTERNS:
        found += [p for p in sorted(out.glob(pattern)) if p not in found]
    return found


def _open_logs() -> set[Path]:
    """Files the logging handlers of this process write to (left in place: they belong to it)."""
    return {
        Path(h.baseFilename).resolve() for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
    }


def start_new_run(out: Path) -> list[Path]:
    """Move an earlier run's files from ``out`` into ``out/previous/``; returns what was moved."""
    in_use = _open_logs()
    files = [f for f in earlier_run_files(out) if f.resolve() not in in_use]
    if not files:
        return []
    prev = out / PREVIOUS_DIR
    shutil.rmtree(prev, ignore_errors=True)
    prev.mkdir()
    for f in files:
        f.replace(prev / f.name)
    return files


def trim_original_log(out: Path, first_epoch: int) -> None:
    """Drop ``log.log`` lines of epochs ``>= first_epoch`` (a resumed run writes them again)."""
    path = out / "log.log"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        m = _EPOCH_LINE.match(line)
        if m is None or int(m.group(1)) < first_epoch:
            kept.append(line + "\n")
    text = "".join(kept)
    atomic_write(path, lambda tmp: tmp.write_text(text))
