"""bench/gpu_check.sh --tiny: the GPU check's code path, run on the CPU so it is never a stub."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu-cpu-tiny.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny", "--device", "cpu", "--no-compile",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text()) and printed["errors"] == {}
    a = printed["bf16_vs_fp32"]
    assert a["questions"] == 64 and 0 < a["max_abs_logit_diff"] < 0.1 and a["answer_agreement"] >= 0.9
    steps = printed["vqa_steps"]
    assert [(r["batch"], r["compile"]) for r in steps] == [(8, False), (16, False)]
    assert all(r["examples_per_s"] > 0 and r["peak_memory_gib"] > 0 and r["mfu"] is None for r in steps)
    assert [r["workers"] for r in printed["input_pipeline"]] == [0, 2]
    assert all(r["examples_per_s"] > 0 and r["batches"] >= 4 for r in printed["input_pipeline"])
    pre = printed["pretrain"]
    assert pre["examples_per_s"] > 0 and pre["gflop_per_example"] > 0 and math.isfinite(pre["pretrain_20_epochs_h"])
    syncs = printed["host_syncs"]
    assert syncs["tensor_reads_per_step"] == 0, syncs
    assert all(run["tensor_reads"] > 0 for run in syncs["runs"].values())  # the counter sees the epoch-end reads
    assert set(printed["goals"]) == {"vqa_4_epochs_min", "pretrain_20_epochs_h"}
