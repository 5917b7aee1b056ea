"""README claims checked directly: feature conversion runs in constant memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONVERT = textwrap.dedent("""
    import sys
    import numpy as np
    from features.convert import convert_tsv
    from features.tsv import RegionRecord, write_tsv

    lines, tsv = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(0)
    block = rng.standard_normal((36, 512), dtype=np.float32)

    def records():  # one at a time: writing the TSV holds a single line
        for i in range(lines):
            xy = rng.uniform(0, 100, (36, 2)).astype(np.float32)
            yield RegionRecord(f"img{i}", 240, 320, np.zeros(36, np.int64), np.ones(36, np.float32),
                               np.zeros(36, np.int64), np.ones(36, np.float32),
                               np.concatenate([xy, xy + 50], 1), block + i)

    write_tsv(tsv, records())
    def peak():
        return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    before = peak()
    stats = convert_tsv(tsv, progress=False)
    assert stats.images == lines
    print(peak() - before)
""")


def _peak_growth_kb(tmp_path: Path, lines: int) -> int:
    tsv = tmp_path / f"n{lines}_obj36.tsv"
    out = subprocess.run([sys.executable, "-c", CONVERT, str(lines), str(tsv)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                         check=True, timeout=300)
    return int(out.stdout.split()[-1])


def test_conversion_memory_does_not_grow_with_the_tsv(tmp_path: Path) -> None:
    """Converting 8x the lines (1200 vs 150 images of 36 x 512 floats: +77 MB of fp32 features,
    +39 MB in the fp16 store) raises the converting process's peak memory by far less."""
    small = _peak_growth_kb(tmp_path, 150)
    large = _peak_growth_kb(tmp_path, 1200)
    held = 1050 * 36 * 512 * 2 // 1024  # the extra images' fp16 features, KB
    assert large - small < held // 4, (small, large, held)
