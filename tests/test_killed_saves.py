"""Temp files of a save killed with SIGKILL: named after their writer, removed by the next writer
into the folder once that process is gone, never loaded; the previous file stays whole."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from engine.state import RESUME_FILE, load_training_state, save_training_state
from lxrt import LXRTConfig
from lxrt.fileio import atomic_write_text
from tasks import vqa
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:40]

# Makes torch.save slow in the process it is loaded into (as sitecustomize): the bytes of the
# checkpoint reach its temp file 256 KB at a time, a second apart, so that a kill lands in the middle.
SLOW_SAVES = textwrap.dedent("""
    import io, time, torch
    _save = torch.save

    def _slow(obj, f, *args, **kwargs):
        if isinstance(f, (str, bytes)) or hasattr(f, "__fspath__"):
            return _save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        _save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        for i in range(0, len(data), 1 << 18):
            f.write(data[i : i + (1 << 18)])
            f.flush()
            time.sleep(1)

    torch.save = _slow
""")


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_names_carry_host_and_pid_and_only_gone_writers_are_swept(tmp_path: Path) -> None:
    """A temp file of a process that is gone is removed; one of a live process, of another host, or
    of another naming is left alone."""
    from lxrt.fileio import sweep_temp_files, temp_path

    name = temp_path(tmp_path / "checkpoint.pt").name
    assert re.fullmatch(rf"\.checkpoint\.pt\.{re.escape(HOST)}\.{os.getpid()}\.\d+\.tmp", name), name
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        files = {
            "dead": f".checkpoint.pt.{HOST}.{dead}.0.tmp",
            "live": f".checkpoint.pt.{HOST}.{live.pid}.0.tmp",
            "mine": f".config.json.{HOST}.{os.getpid()}.3.tmp",
            "other_host": f".checkpoint.pt.{HOST}x.{dead}.0.tmp",
            "other_name": ".checkpoint.pt.ab12cd_3.tmp",
            "data": "checkpoint.pt",
        }
        for f in files.values():
            (tmp_path / f).write_bytes(b"x" * 100)
        removed = sweep_temp_files(tmp_path)
        assert removed == [tmp_path / files["dead"]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in files.items() if k != "dead")
    finally:
        live.kill()
        live.wait()


def test_killed_checkpoint_save_leaves_a_temp_file_the_next_save_removes(tmp_path: Path) -> None:
    """kill -9 in the middle of torch.save: the temp file is named after the killed process, the
    previous checkpoint loads unchanged, and the next write into the folder removes the temp file
    (it used to stay forever under a random mkstemp name)."""
    path = tmp_path / RESUME_FILE
    save_training_state(path, {"model": {"w": torch.arange(5.0)}, "optimizer": {}, "rng": {}, "epoch": 1, "step": 3})
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_SAVES)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO / 'src'}", "OMP_NUM_THREADS": "1"}
    writer = textwrap.dedent("""
        import sys, torch
        from engine.state import save_training_state
        save_training_state(sys.argv[1], {"model": {"w": torch.zeros(1 << 20)}, "optimizer": {}, "rng": {},
                                          "epoch": 2, "step": 0})
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.stat().st_size >= 1 << 18 for p in _temp_files(tmp_path)):
        time.sleep(0.05)
    assert proc.poll() is None, "the writer ended before it could be killed mid-write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = _temp_files(tmp_path)
    assert [p.name for p in left] == [f".{RESUME_FILE}.{HOST}.{proc.pid}.0.tmp"], left
    state = load_training_state(path)
    assert torch.equal(state["model"]["w"], torch.arange(5.0)) and state["epoch"] == 1

    atomic_write_text(tmp_path / "notes.txt", "the next write into the folder\n")
    assert not _temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESUME_FILE, "notes.txt", "site"]


SMALL = SyntheticConfig(seed=4, sizes=dict(coco_train_images=12, coco_val_images=6, minival_images=2,
        coco_test_images=2, vg_images=4, gqa_valid_images=2, gqa_submit_images=2, gqa_testdev_images=2,
        nlvr2_train_sets=2, nlvr2_valid_sets=2, nlvr2_test_sets=2))  # fmt: skip


@pytest.mark.slow
def test_training_run_killed_while_saving_is_resumed_without_its_temp_file(tmp_path: Path) -> None:
    """A real run is killed with SIGKILL while it writes checkpoint.pt; --resume starts from the
    previous checkpoint (the temp file is never read), removes the killed run's temp file and says so."""
    generate(tmp_path / "data", SMALL, progress=False)
    model = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=64)
    (tmp_path / "model.json").write_text(json.dumps(model.to_dict()))
    out = tmp_path / "run"
    args = ["--data-root", str(tmp_path / "data"), "--output", str(out), "--model-config", str(tmp_path / "model.json"),
            "--fromScratch", "--no-progress", "--train", "train", "--valid", "", "--batchSize", "8", "--epochs", "2",
            "--loadLXMERTQA", "", "--optim", "adamw", "--lr", "1e-3", "--save-every", "2"]  # fmt: skip
    vqa.main([*args, "--max-steps", "2"])  # checkpoint.pt at step 2
    first = load_training_state(out / RESUME_FILE)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_SAVES)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO / 'src'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tasks.vqa", *args, "--resume"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    pattern = f".{RESUME_FILE}.{HOST}.{proc.pid}."
    while time.time() < deadline and not any(
        p.name.startswith(pattern) and p.stat().st_size >= 1 << 18 for p in _temp_files(out)
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed while saving"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in _temp_files(out)][:1] and all(p.name.startswith(pattern) for p in _temp_files(out))
    kept = load_training_state(out / RESUME_FILE)
    assert (kept["epoch"], kept["step"]) == (first["epoch"], first["step"])

    env["PYTHONPATH"] = str(REPO / "src")  # the next start, at full speed
    again = subprocess.run([sys.executable, "-m", "tasks.vqa", *args, "--resume"], env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert not _temp_files(out)
    assert f"left by process {proc.pid} which was stopped while writing it" in (out / "run.log").read_text()
    assert load_training_state(out / RESUME_FILE)["epoch"] == 2
