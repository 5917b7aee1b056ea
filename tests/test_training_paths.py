"""Loop paths beyond the default: --compile, fp16 with its grad scaler, checkpoints under crashes and
a full disk, FSDP resume with BEST/LAST snapshots, 2-process evaluation, and rank-0-only writing."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from engine import recipes
from engine.loop import STEPS_FILE, run
from engine.state import RESUME_FILE, load_training_state, save_training_state
from lxrt import LXRTConfig, read_state_dict
from tasks.synthetic import SyntheticConfig, generate
from tasks.vqa import VQATask

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port no process listens on now: runs on parallel test workers never meet on one rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
MODEL = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=16,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    sizes = dict(coco_train_images=16, coco_val_images=14, minival_images=7, coco_test_images=2, vg_images=4,
                 gqa_valid_images=2, gqa_submit_images=1, gqa_testdev_images=1, nlvr2_train_sets=2,
                 nlvr2_valid_sets=1, nlvr2_test_sets=1)
    generate(root / "data", SyntheticConfig(seed=5, feat_dim=16, num_boxes=6, sizes=sizes), progress=False)
    (root / "model.json").write_text(json.dumps(MODEL.to_dict()))
    return root / "data"


def _cfg(data: Path, out: Path, **changes):
    base = dict(data_root=str(data), output=str(out), train="train", valid="", load_lxmert_qa="",
                from_scratch=True, batch_size=4, epochs=1, progress=False, log_every=1, model=MODEL, lr=1e-3)
    return recipes.get("vqa_lxr955").replace(**{**base, **changes})


def _losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / STEPS_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_compile_trains_like_eager(data, tmp_path):
    """``--compile`` (inductor) runs the loop's steps and gives the eager losses."""
    eager = _cfg(data, tmp_path / "eager", max_steps=2)
    run(VQATask(eager), eager, device="cpu")
    compiled = eager.replace(output=str(tmp_path / "compiled"), compile=True)
    run(VQATask(compiled), compiled, device="cpu")
    assert "compile=True" in (tmp_path / "compiled" / "run.log").read_text()
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4, abs=1e-5)


def test_fp16_grad_scaler_is_saved_and_resumed(data, tmp_path):
    """fp16 autocast with a live grad scaler: a run stopped at step 4 and resumed gives the
    uninterrupted run's losses and scaler; the scaler state really comes from the checkpoint."""
    straight = _cfg(data, tmp_path / "straight", amp="fp16")
    run(VQATask(straight), straight)
    steps = len(_losses(tmp_path / "straight"))
    half = straight.replace(output=str(tmp_path / "half"), max_steps=4)
    run(VQATask(half), half, device="cpu")
    saved = load_training_state(tmp_path / "half" / RESUME_FILE)
    assert saved["step"] == 4 and saved["scaler"]["scale"] > 0  # an enabled scaler has a state
    run(VQATask(half), half.replace(max_steps=0, resume=True), device="cpu")
    assert _losses(tmp_path / "half") == _losses(tmp_path / "straight") and steps == 12
    final = load_training_state(tmp_path / "half" / RESUME_FILE)["scaler"]
    assert final == load_training_state(tmp_path / "straight" / RESUME_FILE)["scaler"]
    # a scale that only the checkpoint holds is the one the resumed run continues with
    tampered = load_training_state(tmp_path / "half" / RESUME_FILE)
    tampered["scaler"]["scale"] = 8.0
    tampered.update(epoch=0, step=8)
    save_training_state(tmp_path / "half" / RESUME_FILE, tampered)
    run(VQATask(half), half.replace(max_steps=0, resume=True), device="cpu")
    assert load_training_state(tmp_path / "half" / RESUME_FILE)["scaler"]["scale"] <= 8.0


SLOW_WRITER = textwrap.dedent("""
    import io, sys, time, torch
    from engine.state import save_training_state

    real_save = torch.save

    def slow_disk(obj, f, *args, **kwargs):  # the bytes reach the file 1 MB at a time, slowly
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        for i in range(0, len(data), 1 << 20):  # f: the open temp file
            f.write(data[i : i + (1 << 20)])
            f.flush()
            time.sleep(2)

    torch.save = slow_disk
    save_training_state(sys.argv[1], {"model": {"w": torch.zeros(1 << 22)}, "optimizer": {}, "rng": {},
                                      "epoch": 2, "step": 0})
""")


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / RESUME_FILE
    save_training_state(path, {"model": {"w": torch.arange(5.0)}, "optimizer": {}, "rng": {}, "epoch": 1, "step": 3})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 1 << 20 for p in tmp_path.iterdir()):
        time.sleep(0.05)  # the 4 MB tensor is written; the writer now sleeps inside the pickle
    assert proc.poll() is None, "the writer ended before it could be killed mid-write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_training_state(path)
    assert torch.equal(state["model"]["w"], torch.arange(5.0)) and (state["epoch"], state["step"]) == (1, 3)


def _half_then_enospc(calls: list[int], fail_on: int):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < fail_on:
            return real(obj, f, *args, **kwargs)
        import io

        buf = io.BytesIO()
        real(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # f: the open temp file
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_disk_full_while_saving_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    """ENOSPC in the middle of the second checkpoint: the run stops with a clear error, the first
    checkpoint stays whole and loadable (no temp file left), and the run resumes from it."""
    cfg = _cfg(data, tmp_path / "full", save_every=2, max_steps=6)
    calls: list[int] = []
    monkeypatch.setattr(torch, "save", _half_then_enospc(calls, fail_on=2))
    with pytest.raises(Exception, match=r"(?i)no space left"):  # OSError, or a wrapper naming the folder
        run(VQATask(cfg), cfg, device="cpu")
    monkeypatch.undo()
    out = tmp_path / "full"
    assert not list(out.glob(".*.tmp"))
    state = load_training_state(out / RESUME_FILE)
    assert (state["epoch"], state["step"]) == (0, 2)
    run(VQATask(cfg), cfg.replace(resume=True), device="cpu")
    straight = cfg.replace(output=str(tmp_path / "straight"))
    run(VQATask(straight), straight, device="cpu")
    assert _losses(out) == _losses(tmp_path / "straight")


# ---------------------------------------------------------------------------------------- 2 processes
AUDIT = textwrap.dedent("""
    # Records every file a process of rank > 0 creates, renames or opens for writing under AUDIT_DIR.
    import os, sys
    _dir, _log, _rank = os.environ.get("AUDIT_DIR"), os.environ.get("AUDIT_LOG"), os.environ.get("RANK", "0")
    if _dir and _log and _rank != "0":
        _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        _root = os.path.realpath(_dir)

        def _hook(event, args):
            paths = []
            if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
                mode, flags = args[1] or "r", args[2] or 0
                if any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR):
                    paths = [args[0]]
            elif event in ("os.rename", "os.mkdir", "os.remove", "tempfile.mkstemp"):
                paths = [a for a in args if isinstance(a, (str, os.PathLike))]
            for p in paths:
                if os.path.realpath(os.path.join(os.getcwd(), os.fspath(p))).startswith(_root):
                    os.write(_fd, f"rank {_rank} {event} {p}\\n".encode())

        sys.addaudithook(_hook)
""")


def _script(root: Path, script: str, *args: str, nproc: int = 1, audit: Path | None = None) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if nproc > 1:
        env.update(NPROC_PER_NODE=str(nproc), MASTER_PORT=str(free_port()))
    if audit is not None:
        (root / "audit").mkdir(exist_ok=True)
        (root / "audit" / "sitecustomize.py").write_text(AUDIT)
        env.update(PYTHONPATH=str(root / "audit"), AUDIT_DIR=str(root / "snap"), AUDIT_LOG=str(audit))
    cmd = ["bash", str(REPO / "run" / script), "0", *args, "--no-progress", "--model-config", "model.json"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_fsdp_resume_snapshots_and_two_process_evaluation(data, tmp_path):
    """FSDP2 on 2 processes, stopped at step 3 and resumed: its LAST/BEST snapshots and validation
    metrics are those of 1 process. Evaluation on 2 processes of an odd number of questions writes
    the 1-process prediction file and metrics (every question counted once); files are written by
    rank 0 alone."""
    root = data.parent
    common = ["--batchSize", "8", "--epochs", "1", "--lr", "1e-3", "--fromScratch", "--loadLXMERTQA", ""]
    _script(root, "vqa_finetune.bash", "one", *common)
    audit = tmp_path / "writes.txt"
    _script(root, "vqa_finetune.bash", "two", *common, "--fsdp", "--max-steps", "3", nproc=2, audit=audit)
    assert not (root / "snap/vqa/two/LAST.pth").exists()
    _script(root, "vqa_finetune.bash", "two", *common, "--fsdp", "--resume", nproc=2, audit=audit)
    one, two = root / "snap/vqa/one", root / "snap/vqa/two"
    assert "resumed from" in (two / "run.log").read_text()
    for name in ("LAST.pth", "BEST.pth"):
        a, b = read_state_dict(one / name), read_state_dict(two / name)
        assert a.keys() == b.keys() and "logit_fc.3.weight" in a
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=f"{name} {k}")
    h1, h2 = (json.loads((r / "history.json").read_text())[-1] for r in (one, two))
    assert h2["valid/accuracy"] == h1["valid/accuracy"]
    # The loss is a mean of per-rank batch means, and a rank padded to an even share repeats one
    # question: close, not equal (accuracy and predictions count every question exactly once).
    assert h2["valid/loss"] == pytest.approx(h1["valid/loss"], rel=0.05)

    # evaluation of an odd number of questions, 1 vs 2 processes
    minival = json.loads((data / "vqa/minival.json").read_text())
    assert len(minival) % 2 == 1  # one rank gets a repeated question to fill its share
    for name, n in (("eval1", 1), ("eval2", 2)):
        _script(root, "vqa_test.bash", name, "--test", "minival", "--load", "snap/vqa/one/BEST",
                "--eval-batch-size", "6", nproc=n, audit=audit if n == 2 else None)
    p1, p2 = (json.loads((root / f"snap/vqa/{n}/minival_predict.json").read_text()) for n in ("eval1", "eval2"))
    assert len(p1) == len(minival) and sorted(map(json.dumps, p1)) == sorted(map(json.dumps, p2))
    m1, m2 = (json.loads((root / f"snap/vqa/{n}/minival_metrics.json").read_text()) for n in ("eval1", "eval2"))
    assert m1["accuracy"] == m2["accuracy"]
    assert m2["loss"] == pytest.approx(m1["loss"], rel=0.05)  # see above
    assert audit.is_file(), "the rank-1 processes did not load the audit hook"
    assert audit.read_text() == "", audit.read_text()  # rank 1 created, renamed or wrote no file of the run
