"""A full disk anywhere a run writes: one line naming the file, the folder, the space needed and free;
exit status 1; the previous files intact; no temp file left.

The real failure comes from a small tmpfs mounted in a private mount namespace (``unshare``) that
lives only as long as the process using it; where that is not possible those tests are skipped and
the in-process ones still run: a file whose writes raise a real ``OSError(ENOSPC)`` from inside
``torch.save``, or TensorBoard's file opening failing the same way.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lxrt.checkpoint
from engine.report import RunReport
from engine.state import load_training_state, rng_state, save_training_state
from features import convert
from lxrt import LXRTConfig, read_state_dict, save_state_dict
from lxrt.fileio import DiskFullError
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
ONE_LINE = re.compile(
    r"^error: no space left on (?P<folder>\S+) while (writing|appending to|writing TensorBoard "
    r"scalars to) (?P<file>\S+) \((needs about [\d.]+ \w+, )?[\d.]+ \w+ free\); .*\. Free some "
    r"space and run again$"
)


@functools.cache
def _unshare() -> str | None:
    """``unshare`` when this machine lets a process mount a tmpfs of its own, else None."""
    tool = shutil.which("unshare")
    if tool is None or sys.platform != "linux":
        return None
    probe = subprocess.run([tool, "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', "/tmp"],
                           capture_output=True, timeout=60)  # fmt: skip
    return tool if probe.returncode == 0 else None


needs_small_fs = pytest.mark.skipif(_unshare() is None, reason="cannot mount a private tmpfs here")


def on_small_fs(tmp_path: Path, size: str, script: str, *args: str, prelude: str = "") -> dict:
    """Run ``script`` (Python; ``sys.argv[1]``: the mount point; ``FS_TOOLS`` and ``prelude`` defined)
    with a fresh ``size`` tmpfs mounted at ``tmp_path/mnt`` in a private mount namespace; returns the
    JSON object it prints last."""
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    shell = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    cmd = [_unshare(), "-rm", "sh", "-c", shell, "sh", size, str(mnt), sys.executable, "-c",
           "".join(textwrap.dedent(code) for code in (FS_TOOLS, prelude, script)), str(mnt), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FS_TOOLS = """
    import hashlib, json, os, shutil, subprocess, sys
    from pathlib import Path

    MNT = Path(sys.argv[1])

    def fill(leave):
        '''Take all the free space of MNT but ``leave`` bytes.'''
        with open(MNT / "filler", "ab") as f:
            take = shutil.disk_usage(MNT).free - leave
            if take > 0:
                os.posix_fallocate(f.fileno(), f.seek(0, 2), take)

    def unfill():
        (MNT / "filler").unlink(missing_ok=True)

    def digest(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None

    def listing(folder):
        return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
"""


# ---- in process: a file whose writes fail with a real OSError(ENOSPC) -----------------------------


class FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write past it stores what fits, then raises
    ``OSError(code)`` as the kernel does."""

    def __init__(self, path: str | Path, room: int, code: int = errno.ENOSPC) -> None:
        super().__init__(path, "wb")
        self.room, self.code = room, code

    def write(self, data) -> int:  # noqa: ANN001
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            super().write(data[: self.room])
            self.room = 0
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return super().write(data)


def _state(n: int) -> dict:
    return {"model": {"w": torch.arange(float(n))}, "optimizer": {}, "rng": rng_state(), "epoch": 1, "step": 0}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_checkpoint_save_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """torch.save's own writes fail with ENOSPC/EDQUOT half-way (the disk still shows free space, as
    with a quota): DiskFullError naming file, folder, size needed and free; the previous checkpoint
    intact; no temp file. (torch.save to a path lost the errno; the message text was matched.)"""
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, _state(5))
    before = path.read_bytes()
    monkeypatch.setattr(lxrt.checkpoint, "open", lambda p, mode="r": io.BufferedWriter(FullDisk(p, 50_000, code)),
                        raising=False)  # fmt: skip
    with pytest.raises(DiskFullError) as err:
        save_training_state(path, _state(1_000_000))
    message = str(err.value)
    assert message.startswith(f"no space left on {tmp_path} while writing checkpoint.pt (needs about 4.0 MB, ")
    assert " free); the previous checkpoint.pt is intact. Free some space and run again" in message
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_training_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_snapshot_save_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for the weights snapshot (BEST.pth / LAST.pth through save_state_dict)."""
    path = save_state_dict({"w": torch.ones(3)}, tmp_path / "BEST.pth")
    monkeypatch.setattr(lxrt.checkpoint, "open", lambda p, mode="r": io.BufferedWriter(FullDisk(p, 1000)),
                        raising=False)  # fmt: skip
    with pytest.raises(DiskFullError, match=r"while writing BEST.pth \(needs about 400.0 KB, .* free\); the "
                                            r"previous BEST.pth is intact"):  # fmt: skip
        save_state_dict({"w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert torch.equal(read_state_dict(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["BEST.pth"]


def test_tensorboard_on_a_full_disk_at_the_start_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """The event file cannot be written when the run starts: DiskFullError naming the tb folder
    (it was a bare traceback from the writer)."""
    import tensorboard.compat.tensorflow_stub.io.gfile as gfile

    real_open = io.open

    def full_open(file, mode="r", *args, **kwargs):  # noqa: ANN001
        f = real_open(file, mode, *args, **kwargs)
        if "tfevents" in str(file) and "w" in mode or "a" in mode and "tfevents" in str(file):
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(gfile.io, "open", full_open)
    with pytest.raises(DiskFullError, match=rf"no space left on {tmp_path}/tb while writing TensorBoard scalars to "
                                            r"events.out.tfevents.* free\); no scalars were written"):  # fmt: skip
        RunReport(tmp_path, enabled=True)
    assert "Traceback" not in capfd.readouterr().err


# ---- a real full filesystem ---------------------------------------------------------------------------


@needs_small_fs
def test_torch_save_to_a_path_on_a_full_filesystem(tmp_path: Path) -> None:
    """torch.save writing to a path (no errno: "unexpected pos ..." / "iostream error") on a tmpfs
    with 1 MB left: recognised by the free space beside the failed write, previous file intact."""
    result = on_small_fs(
        tmp_path,
        "4m",
        """
        import torch
        from lxrt.fileio import DiskFullError, atomic_write
        atomic_write(MNT / "w.pt", lambda tmp: torch.save({"w": torch.ones(10)}, tmp))
        before = digest(MNT / "w.pt")
        fill(1 << 20)
        try:
            atomic_write(MNT / "w.pt", lambda tmp: torch.save({"w": torch.ones(1 << 20)}, tmp), size_hint=4 << 20)
            message = None
        except DiskFullError as err:
            message = str(err)
            cause = repr(err.__cause__)
        print(json.dumps({"message": message, "cause": cause, "same": digest(MNT / "w.pt") == before,
                          "files": listing(MNT)}))
    """,
    )
    assert result["message"] is not None, result
    assert "errno" not in result["cause"].lower() and "RuntimeError" in result["cause"], result["cause"]
    assert re.fullmatch(
        r"no space left on \S+/mnt while writing w.pt \(needs about 4.2 MB, 1.0 MB free\); the "
        r"previous w.pt is intact. Free some space and run again",
        result["message"],
    ), result
    assert result["same"] and result["files"] == ["filler", "w.pt"]


@needs_small_fs
def test_log_appends_on_a_full_filesystem_keep_whole_lines(tmp_path: Path) -> None:
    """A log line that does not fit: DiskFullError, and the log holds exactly what it held."""
    result = on_small_fs(
        tmp_path,
        "1m",
        """
        from lxrt.fileio import DiskFullError, append_text
        append_text(MNT / "steps.jsonl", '{"step": 0}\\n')
        fill(1000)
        try:
            append_text(MNT / "steps.jsonl", "x" * 20_000 + "\\n")
            message = None
        except DiskFullError as err:
            message = str(err)
        print(json.dumps({"message": message, "text": (MNT / "steps.jsonl").read_text()}))
    """,
    )
    assert result["text"] == '{"step": 0}\n'
    assert re.fullmatch(r"no space left on \S+ while appending to steps.jsonl \(needs about 20.0 KB, [\d.]+ \w+ "
                        r"free\); steps.jsonl holds what it held before. Free some space and run again",
                        result["message"] or ""), result  # fmt: skip


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diskfull")
    generate(root / "data", SyntheticConfig(seed=5, sizes=dict(coco_train_images=12, coco_val_images=10,
            minival_images=4, coco_test_images=4, vg_images=4, gqa_valid_images=2, gqa_submit_images=2,
            gqa_testdev_images=2, nlvr2_train_sets=2, nlvr2_valid_sets=2,
            nlvr2_test_sets=2)), progress=False)  # fmt: skip
    model = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=64)
    (root / "model.json").write_text(json.dumps(model.to_dict()))
    convert.convert_tsv(root / "data/mscoco_imgfeat/train2014_obj36.tsv", progress=False)  # not in the runs' output
    return root


RUN = """
    def vqa(out, *extra):
        data, model = sys.argv[2], sys.argv[3]
        cmd = [sys.executable, "-m", "tasks.vqa", "--data-root", data, "--output", str(out), "--model-config", model,
               "--fromScratch", "--no-progress", "--train", "train", "--valid", "", "--batchSize", "8",
               "--loadLXMERTQA", "", "--optim", "adamw", "--lr", "1e-3", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True)
        return {"rc": p.returncode, "err": p.stderr, "files": listing(out)}
"""


@needs_small_fs
def test_training_run_starting_on_a_full_disk_ends_in_one_line(tmp_path: Path, synth: Path) -> None:
    """A tiny VQA run whose --output is on a full tmpfs (0, 4 KB, 16 KB left): whichever file fails first
    (config.json, run.log, TensorBoard's event file, steps.jsonl), exit status 1 and one line on stderr."""
    result = on_small_fs(
        tmp_path,
        "8m",
        """
        out = {}
        for leave in (0, 4096, 16384):
            unfill()
            shutil.rmtree(MNT / "run", ignore_errors=True)
            fill(leave)
            out[leave] = vqa(MNT / "run", "--epochs", "1")
        print(json.dumps(out))
    """,
        str(synth / "data"),
        str(synth / "model.json"),
        prelude=RUN,
    )
    for leave, run in result.items():
        assert run["rc"] == 1, (leave, run)
        lines = run["err"].splitlines()
        assert len(lines) == 1 and ONE_LINE.match(lines[0]), (leave, run["err"][-2000:])
        assert not [f for f in run["files"] if f.endswith(".tmp")], run["files"]


@needs_small_fs
def test_checkpoint_on_a_full_disk_keeps_the_previous_one_and_resumes(tmp_path: Path, synth: Path) -> None:
    """Epoch 1 is saved; the disk then fills up: epoch 2's save ends in one line naming the file with
    the space needed and free, exit status 1; checkpoint.pt is the one of epoch 1, byte for byte, the
    logs hold whole lines, no temp file; after freeing space, --resume finishes the run."""
    result = on_small_fs(
        tmp_path,
        "64m",
        """
        run = MNT / "run"
        first = vqa(run, "--epochs", "2", "--max-steps", "4")  # 36 questions: 4 steps an epoch
        before = digest(run / "checkpoint.pt")
        fill(600_000)
        full = vqa(run, "--epochs", "2", "--resume")
        after = digest(run / "checkpoint.pt")
        steps = (run / "steps.jsonl").read_text()
        unfill()
        again = vqa(run, "--epochs", "2", "--resume")
        print(json.dumps({"first": first, "full": full, "same": before == after, "steps": steps, "again": again,
                          "history": json.loads((run / "history.json").read_text())}))
    """,
        str(synth / "data"),
        str(synth / "model.json"),
        prelude=RUN,
    )
    assert result["first"]["rc"] == 0, result["first"]["err"][-2000:]
    full = result["full"]
    assert full["rc"] == 1 and len(full["err"].splitlines()) == 1, full["err"][-3000:]
    found = ONE_LINE.match(full["err"].strip())
    assert found and found["file"] in ("checkpoint.pt", "LAST.pth", "BEST.pth", "history.json"), full["err"]
    assert "needs about" in full["err"], full["err"]
    assert result["same"], "the checkpoint of epoch 1 changed"
    assert all(json.loads(line) for line in result["steps"].splitlines())
    assert not [f for f in full["files"] if f.endswith(".tmp")], full["files"]
    assert result["again"]["rc"] == 0, result["again"]["err"][-2000:]
    assert [r["epoch"] for r in result["history"]] == [0, 1]
