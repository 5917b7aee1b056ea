"""The training loop's hot path: no host reads per step, and ``--features-on-device`` batches."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import recipes
from engine.device_features import DeviceFeatures, move_features_to_device
from engine.loop import STEPS_FILE, Trainer, run
from engine.syncs import HostSyncCounter
from features.store import FeatureStore
from features.store_writer import StoreWriter
from lxrt import LXRTConfig
from tasks.data_common import ImageFeatures
from tasks.synthetic import SyntheticConfig, generate
from tasks.vqa import VQATask

MODEL = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=16,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hot") / "data"
    sizes = dict(coco_train_images=24, coco_val_images=8, minival_images=4, coco_test_images=2, vg_images=4,
                 gqa_valid_images=2, gqa_submit_images=1, gqa_testdev_images=1, nlvr2_train_sets=2,
                 nlvr2_valid_sets=1, nlvr2_test_sets=1)
    generate(root, SyntheticConfig(seed=3, feat_dim=16, num_boxes=6, sizes=sizes), progress=False)
    return root


def _cfg(data: Path, out: Path, **changes):
    base = dict(data_root=str(data), output=str(out), train="train", valid="", load_lxmert_qa="",
                from_scratch=True, batch_size=4, epochs=1, progress=False, log_every=1000, model=MODEL,
                optim="bert", lr=1e-3)
    return recipes.get("vqa_lxr955").replace(**{**base, **changes})


def _counted_fit(cfg, monkeypatch) -> HostSyncCounter:
    """Reads of tensor values during a run, collation (host-side batch building) excluded."""
    counter = HostSyncCounter()
    original = VQATask.collator
    monkeypatch.setattr(VQATask, "collator", lambda self, ds: counter.pausing(original(self, ds)))
    with counter:
        run(VQATask(cfg), cfg, device="cpu")
    return counter


def test_training_steps_read_nothing_from_the_device(data, tmp_path, monkeypatch):
    """A run stopped after 16 steps reads tensor values exactly as often as one stopped after 4
    (both mid-epoch; reads at log points, the stop and checkpoints only): losses, accuracy and
    predictions stay on the device between log points."""
    short = _counted_fit(_cfg(data, tmp_path / "a", max_steps=4), monkeypatch)
    long = _counted_fit(_cfg(data, tmp_path / "b", max_steps=16), monkeypatch)
    assert long.total > 0, "the counter saw none of the epoch-end reads"
    assert long.calls == short.calls, (short.calls, long.calls)
    steps = [json.loads(ln) for ln in (tmp_path / "b" / STEPS_FILE).read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(16)) and all(np.isfinite(s["loss"]) for s in steps)
    # every --log-every steps is one read point more
    logged = _counted_fit(_cfg(data, tmp_path / "c", max_steps=16, log_every=4), monkeypatch)
    assert logged.total > long.total


def _variable_store(path: Path, counts: list[int], dim: int = 5, seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(seed)
    with StoreWriter(path, feat_dim=dim, dtype="float16") as w:
        for i, n in enumerate(counts):
            xy = rng.uniform(0, 100, (n, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(1, 50, (n, 2))], 1).astype(np.float32)
            w.add(f"img{i}", 200, 200, boxes, rng.standard_normal((n, dim)).astype(np.float32))
    return FeatureStore(path)


@pytest.mark.parametrize("num_boxes", [None, 2, 7, 20])
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_device_gather_equals_store_gather(tmp_path, num_boxes, dtype):
    """Two stores (one with variable region counts, one fixed at 4): widths, truncation, padding,
    masks and dtypes as ``ImageFeatures.gather`` gives them."""
    features = ImageFeatures({"var": _variable_store(tmp_path / "v.store", [3, 7, 1, 7, 5]),
                              "fixed": _variable_store(tmp_path / "f.store", [4] * 6, seed=1)})
    ids = [f"img{i}" for i in range(5)] + ["img5"]
    table = DeviceFeatures.load([features], ids, torch.device("cpu"), chunk=2)
    for batch in (["img1", "img0", "img2"], ["img1", "img3"], ["img5", "img4"], ["img2", "img5", "img0"]):
        want = features.gather(batch, num_boxes=num_boxes, dtype=dtype)
        got = table.gather(batch, num_boxes=num_boxes, dtype=dtype)
        assert got[0].dtype == torch.from_numpy(want[0]).dtype
        assert torch.equal(got[0], torch.from_numpy(want[0])), batch
        assert torch.equal(got[1], torch.from_numpy(want[1])), batch
        assert (got[2] is None) == (want[2] is None), batch
        if want[2] is not None:
            assert torch.equal(got[2], torch.from_numpy(want[2])), batch


def test_features_on_device_gives_the_same_run(data, tmp_path):
    """Same batches, hence the same losses step for step, with the features on the device."""
    for name, on in (("store", False), ("device", True)):
        cfg = _cfg(data, tmp_path / name, valid="minival", max_steps=8, log_every=2, features_on_device=on)
        run(VQATask(cfg), cfg, device="cpu")
    store, device = ([json.loads(ln) for ln in (tmp_path / n / STEPS_FILE).read_text().splitlines()]
                     for n in ("store", "device"))
    assert [s["loss"] for s in device] == [s["loss"] for s in store] and len(store) == 8
    log = (tmp_path / "device" / "run.log").read_text()
    assert "--features-on-device:" in log and "copied to cpu" in log


def test_features_on_device_falls_back_when_they_do_not_fit(data, tmp_path, caplog):
    cfg = _cfg(data, tmp_path / "fb", features_on_device=True)
    task = VQATask(cfg)
    train = task.dataset("train", train=True)
    store_features = train.features
    with caplog.at_level(logging.WARNING):
        assert move_features_to_device([train], torch.device("cpu"), logging.getLogger("t"), budget=1000) is None
    assert "need" in caplog.text and "reading them from the store" in caplog.text
    assert train.features is store_features
    # a task whose datasets build examples one by one (pretraining) keeps the store, saying so
    assert move_features_to_device([object()], torch.device("cpu"), logging.getLogger("t")) is None
    assert "does not gather features per batch" in caplog.text
    trainer = Trainer(task, cfg.replace(features_on_device=False), _cpu_env())
    assert trainer.device_features is None


def _cpu_env():
    from engine.distributed import DistEnv

    return DistEnv()
