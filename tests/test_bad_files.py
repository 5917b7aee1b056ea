"""Files that are not what a loader expects, crafted pickles, and full disks: one clear message each."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.state import load_training_state, rng_state, save_training_state, set_rng_state
from features import conversion
from features.store import FeatureStore, StoreError
from features.store_writer import _NpyAppender
from features.tsv import RegionRecord, write_tsv
from lxrt import LXRTConfig, LXRTModel, read_state_dict, save_state_dict
from lxrt.bert_init import load_bert_weights
from lxrt.checkpoint import CheckpointError
from lxrt.fileio import DiskFullError, atomic_write, describe_file
from tasks.answers import DataFormatError, load_json

HTML = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"
def _record(i: int, n: int = 3, dim: int = 16) -> RegionRecord:
    boxes = np.tile(np.array([[0, 0, 5, 5]], np.float32), (n, 1))
    return RegionRecord(img_id=f"img{i}", img_h=10, img_w=10, objects_id=np.zeros(n, np.int64),
                        objects_conf=np.ones(n, np.float32), attrs_id=np.zeros(n, np.int64),
                        attrs_conf=np.ones(n, np.float32), boxes=boxes, features=np.ones((n, dim), np.float32))


LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 870000000\n"


def _truncated_zip(path: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1000)}, buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


BAD_FILES = {
    "html": (lambda p: p.write_text(HTML), "an HTML page", "redirected"),
    "json": (lambda p: p.write_text(json.dumps({"model": "lxmert"})), "a JSON document", None),
    "text": (lambda p: p.write_text("see the README for the weights\n"), "a text file", None),
    "lfs": (lambda p: p.write_text(LFS), "git-LFS pointer", "git lfs pull"),
    "empty": (lambda p: p.write_bytes(b""), "an empty file", None),
    "truncated-zip": (_truncated_zip, "a truncated zip archive", "download it again"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_every_checkpoint_loader_names_the_file_and_what_it_is(tmp_path: Path, kind: str) -> None:
    make, what, hint = BAD_FILES[kind]
    path = tmp_path / "model_LXRT.pth"
    make(path)
    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    make(bert_dir / "pytorch_model.bin")
    run = tmp_path / "run"
    run.mkdir()
    make(run / "checkpoint.pt")
    for load, name in (
        (lambda: read_state_dict(path), "model_LXRT.pth"),  # --load, --loadLXMERT, --loadLXMERTQA
        (lambda: load_training_state(run / "checkpoint.pt"), "checkpoint.pt"),  # --resume
        (lambda: load_bert_weights(LXRTModel(LXRTConfig.tiny()), bert_dir), "pytorch_model.bin"),  # BERT
    ):
        with pytest.raises(CheckpointError) as err:
            load()
        message = str(err.value)
        assert name in message and what in message, message
        assert hint is None or hint in message, message
        assert "weights_only" not in message and "Weights only" not in message, message


def test_describe_file_recognises_real_checkpoints(tmp_path: Path) -> None:
    path = save_state_dict({"a": torch.ones(2)}, tmp_path / "w.pth")
    assert describe_file(path) == "a zip archive"
    st = save_state_dict({"a": torch.ones(2)}, tmp_path / "w.safetensors")
    assert describe_file(st) == "a safetensors file"


def test_resume_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "optimizer": {}, "rng": Payload(), "epoch": 0, "step": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_training_state(path)
    assert "refused" in str(err.value) and "checkpoint.pt" in str(err.value) and "system" in str(err.value)
    assert "weights_only" not in str(err.value)
    assert not marker.exists()


def test_resume_state_round_trips_with_weights_only(tmp_path: Path) -> None:
    import random

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # a cached gaussian is part of numpy's state
    state = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": []}, "rng": rng_state(),
             "epoch": 1, "step": 2, "history": [{"epoch": 0, "train/loss": 1.5}],
             "epoch_progress": {"train_preds": {7: "yes", 8: "no"}, "loss_sum": 3.0}}
    save_training_state(tmp_path / "checkpoint.pt", state)
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    loaded = load_training_state(tmp_path / "checkpoint.pt")
    set_rng_state(loaded["rng"])
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
    assert loaded["epoch_progress"]["train_preds"] == {7: "yes", 8: "no"}


def test_data_and_store_files_that_are_web_pages(tmp_path: Path) -> None:
    page = tmp_path / "train.json"
    page.write_text(HTML)
    with pytest.raises(DataFormatError, match=r"train.json.*an HTML page.*redirected"):
        load_json(page)
    store = tmp_path / "x.store"
    write_tsv(tmp_path / "x.tsv", [_record(0)])
    conversion.convert_tsv(tmp_path / "x.tsv", store, progress=False)
    (store / "features.npy").write_text(LFS)
    with pytest.raises(StoreError, match=r"features.npy.*git-LFS pointer"):
        FeatureStore(store).gather(["img0"])


# ---- full disks ------------------------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, {"model": {"w": torch.ones(3)}, "optimizer": {}, "rng": rng_state(),
                               "epoch": 1, "step": 0})

    def half_then_full(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(b"x" * 1000)
            raise _enospc()

    with pytest.raises(DiskFullError) as err:
        atomic_write(path, half_then_full)
    assert f"no space left on {tmp_path}" in str(err.value)
    assert "the previous checkpoint.pt is intact" in str(err.value)
    assert torch.equal(load_training_state(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("free, full", [(4096, True), (10 << 30, False)])
def test_a_write_failure_without_errno_is_judged_by_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, full: bool
) -> None:
    """A writer that loses the errno (torch.save to a path: "basic_ios::clear: iostream error") is a
    full disk when little space is left beside its partial file, whatever its message says; with
    space left the same error is reported as it is. (The real failure on a tmpfs: test_disk_full.py.)"""

    def failing_save(tmp: Path) -> None:
        tmp.write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=free))
    if full:
        with pytest.raises(DiskFullError, match=r"no space left on .* checkpoint.pt \(needs more than 11 bytes, "
                                                r"4.1 KB free\); checkpoint.pt was not written"):  # fmt: skip
            atomic_write(tmp_path / "checkpoint.pt", failing_save)
    else:
        with pytest.raises(RuntimeError, match="iostream error"):
            atomic_write(tmp_path / "checkpoint.pt", failing_save)
    assert list(tmp_path.iterdir()) == []


def test_conversion_on_a_full_disk_removes_its_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [_record(i) for i in range(6)]
    tsv = tmp_path / "feats" / "x_obj36.tsv"
    tsv.parent.mkdir()
    write_tsv(tsv, recs)
    calls = {"n": 0}
    append = _NpyAppender.append

    def append_until_full(self, arr):
        calls["n"] += 1
        if calls["n"] > 8:
            raise _enospc()
        append(self, arr)

    def close_fails(self):  # closing flushes the buffer, which fails again on a full disk
        self._f.close()
        raise _enospc()

    monkeypatch.setattr(_NpyAppender, "append", append_until_full)
    monkeypatch.setattr(_NpyAppender, "discard", close_fails)
    with pytest.raises(StoreError, match=r"no space left on .*feats while converting .*x_obj36.tsv") as err:
        conversion.convert_tsv(tsv, progress=False)
    assert sorted(p.name for p in tsv.parent.iterdir()) == ["x_obj36.tsv"]
    # A store far below 1 GB is sized in MB, never "about 0.0 GB".
    assert re.search(r"The store needs about 0\.1 MB: free space there", str(err.value)), str(err.value)


def test_store_size_hint_uses_mb_below_one_gb() -> None:
    """The disk-space hint of a store build: GB from 1 GB up, MB below (at least 0.1 MB), never 0.0."""
    assert conversion.size_text(2.46e9) == "2.5 GB"
    assert conversion.size_text(1e9) == "1.0 GB"
    assert conversion.size_text(999e6) == "999.0 MB"
    assert conversion.size_text(37.54e6) == "37.5 MB"
    assert conversion.size_text(2e3) == "0.1 MB"


def test_truncated_zip_is_described(tmp_path: Path) -> None:
    path = _truncated_zip(tmp_path / "w.pth")
    assert not zipfile.is_zipfile(path)
    assert describe_file(path).startswith("a truncated zip archive")
