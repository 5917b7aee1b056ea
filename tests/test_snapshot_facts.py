"""Snapshots say what they are: ``BEST.json`` beside ``BEST.pth``, read by ``--load`` and the export.

Bugs caught: a run that writes no facts (or wrong ones: another task, another model size, an answer
table that is not the one the head was trained on); ``--load`` of a snapshot of another task or
answer table going on with rows that mean other answers; ``--load`` ignoring the snapshot's own
model sizes; a safetensors export that loses the facts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import recipes
from engine.loop import run
from lxrt import CheckpointError, LXRTConfig, export_safetensors, read_state_dict
from lxrt.snapshot import AnswerTableId, read_facts
from tasks.synthetic import SyntheticConfig, generate
from tasks.vqa import VQATask

MODEL = LXRTConfig.tiny(hidden_size=32, num_attention_heads=2, intermediate_size=64, visual_feat_dim=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("facts")
    data = root / "data"
    generate(
        data,
        SyntheticConfig(
            seed=3,
            feat_dim=16,
            num_boxes=6,
            sizes=dict(
                coco_train_images=12,
                coco_val_images=8,
                minival_images=4,
                coco_test_images=2,
                vg_images=4,
                gqa_valid_images=2,
                gqa_submit_images=1,
                gqa_testdev_images=1,
                nlvr2_train_sets=1,
                nlvr2_valid_sets=1,
                nlvr2_test_sets=1,
            ),
        ),
        progress=False,
    )
    out = root / "run"
    cfg = recipes.get("vqa_lxr955").replace(
        data_root=str(data),
        output=str(out),
        train="train",
        valid="minival",
        load_lxmert_qa="",
        from_scratch=True,
        batch_size=4,
        epochs=1,
        progress=False,
        model=MODEL,
        lr=1e-3,
        recipe="vqa_lxr955",
    )
    run(VQATask(cfg), cfg, device="cpu")
    return data, out


def _test_cfg(data: Path, out: Path, load: Path, model: LXRTConfig):
    return recipes.get("vqa_test").replace(
        data_root=str(data),
        output=str(out),
        test="minival",
        load=str(load),
        progress=False,
        model=model,
        from_scratch=True,
    )


def test_a_run_writes_what_its_snapshots_are(trained) -> None:
    data, out = trained
    for name in ("BEST", "LAST"):
        raw = json.loads((out / f"{name}.json").read_text())
        assert raw["task"] == "vqa" and raw["recipe"] == "vqa_lxr955" and raw["images_per_example"] == 1
        assert raw["model"] == MODEL.to_dict()
        label2ans = json.loads((data / "vqa" / "trainval_label2ans.json").read_text())
        assert raw["num_outputs"] == len(label2ans)
        assert raw["answers"]["count"] == len(label2ans)
        assert raw["answers"]["sha256"] == AnswerTableId.of(label2ans, "x").sha256
        assert read_state_dict(out / f"{name}.pth")["logit_fc.3.weight"].shape[0] == raw["num_outputs"]


def test_load_takes_the_model_sizes_from_the_facts(trained, tmp_path) -> None:
    """A test run whose --model-config differs still loads the snapshot; without facts it cannot."""
    data, out = trained
    other = LXRTConfig.tiny(hidden_size=16, num_attention_heads=2, intermediate_size=32, visual_feat_dim=16)
    cfg = _test_cfg(data, tmp_path / "t1", out / "BEST", other)
    run(VQATask(cfg), cfg, device="cpu")
    assert (tmp_path / "t1" / "minival_predict.json").is_file()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "BEST.pth", bare / "BEST.pth")  # an original-style snapshot: no facts beside it
    cfg = _test_cfg(data, tmp_path / "t2", bare / "BEST", other)
    with pytest.raises(CheckpointError):
        run(VQATask(cfg), cfg, device="cpu")


def test_load_refuses_a_snapshot_of_another_task_or_answer_table(trained, tmp_path) -> None:
    data, out = trained
    snap = tmp_path / "snap"
    snap.mkdir()
    shutil.copy(out / "BEST.pth", snap / "BEST.pth")
    facts = json.loads((out / "BEST.json").read_text())
    (snap / "BEST.json").write_text(json.dumps({**facts, "task": "gqa"}))
    cfg = _test_cfg(data, tmp_path / "t", snap / "BEST", MODEL)
    with pytest.raises(CheckpointError, match="snapshot of task 'gqa'"):
        VQATask(cfg).build_model()
    facts["answers"]["sha256"] = "0" * 64
    (snap / "BEST.json").write_text(json.dumps(facts))
    with pytest.raises(CheckpointError, match="other answers"):
        VQATask(cfg).build_model()


def test_safetensors_export_carries_the_facts(trained, tmp_path) -> None:
    _, out = trained
    exported = export_safetensors(out / "BEST.pth", tmp_path / "BEST.safetensors")
    assert not (tmp_path / "BEST.json").exists()  # the facts travel inside the file
    assert read_facts(exported) == read_facts(out / "BEST.pth")
    ours, theirs = read_state_dict(exported), read_state_dict(out / "BEST.pth")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
