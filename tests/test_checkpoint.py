"""Checkpoint formats: the original key layout, round trips, partial loads and clear errors."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest
import torch

from lxrt import (
    CheckpointError,
    CheckpointShapeError,
    LXMERTForPretraining,
    LXRTConfig,
    TaskEncoder,
    load_encoder,
    load_state,
    read_state_dict,
    remap_answer_head,
    resolve_checkpoint,
    save_state_dict,
)

TINY = LXRTConfig.tiny()


def original_pretraining_keys(llayers: int, xlayers: int, rlayers: int) -> list[str]:
    """The key list of the original ``LXRTPretraining`` state dict, written out from its layout."""
    keys = [f"bert.embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings",
                                                    "token_type_embeddings")]
    keys += ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]
    for n in ("visn_fc", "visn_layer_norm", "box_fc", "box_layer_norm"):
        keys += [f"bert.encoder.visn_fc.{n}.weight", f"bert.encoder.visn_fc.{n}.bias"]

    def wb(prefix: str) -> list[str]:
        return [f"{prefix}.weight", f"{prefix}.bias"]

    def bert_layer(p: str) -> list[str]:
        out = []
        for n in ("query", "key", "value"):
            out += wb(f"{p}.attention.self.{n}")
        out += wb(f"{p}.attention.output.dense") + wb(f"{p}.attention.output.LayerNorm")
        out += wb(f"{p}.intermediate.dense") + wb(f"{p}.output.dense") + wb(f"{p}.output.LayerNorm")
        return out

    for i in range(llayers):
        keys += bert_layer(f"bert.encoder.layer.{i}")
    for i in range(rlayers):
        keys += bert_layer(f"bert.encoder.r_layers.{i}")
    for i in range(xlayers):
        p = f"bert.encoder.x_layers.{i}"
        for n in ("query", "key", "value"):
            keys += wb(f"{p}.visual_attention.att.{n}")
        keys += wb(f"{p}.visual_attention.output.dense") + wb(f"{p}.visual_attention.output.LayerNorm")
        for side in ("lang", "visn"):
            for n in ("query", "key", "value"):
                keys += wb(f"{p}.{side}_self_att.self.{n}")
            keys += wb(f"{p}.{side}_self_att.output.dense") + wb(f"{p}.{side}_self_att.output.LayerNorm")
            keys += wb(f"{p}.{side}_inter.dense") + wb(f"{p}.{side}_output.dense")
            keys += wb(f"{p}.{side}_output.LayerNorm")
    keys += wb("bert.pooler.dense")
    keys += ["cls.predictions.bias"] + wb("cls.predictions.transform.dense")
    keys += wb("cls.predictions.transform.LayerNorm") + ["cls.predictions.decoder.weight"]
    keys += wb("cls.seq_relationship")
    keys += wb("obj_predict_head.transform.dense") + wb("obj_predict_head.transform.LayerNorm")
    for n in ("obj", "attr", "feat"):
        keys += wb(f"obj_predict_head.decoder_dict.{n}")
    keys += wb("answer_head.logit_fc.0") + wb("answer_head.logit_fc.2") + wb("answer_head.logit_fc.3")
    return keys


def test_pretraining_keys_and_shapes_are_the_originals():
    model = LXMERTForPretraining(LXRTConfig())
    state = model.state_dict()
    assert sorted(state) == sorted(original_pretraining_keys(9, 5, 5))
    assert state["bert.encoder.visn_fc.visn_fc.weight"].shape == (768, 2048)
    assert state["answer_head.logit_fc.3.weight"].shape == (9500, 1536)
    assert state["obj_predict_head.decoder_dict.obj.weight"].shape == (1600, 768)
    assert state["cls.predictions.decoder.weight"].data_ptr() == state[
        "bert.embeddings.word_embeddings.weight"].data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 228_051_752


def test_encoder_wrapper_keys_match_fine_tuned_snapshots():
    keys = set(TaskEncoder(TINY).state_dict())
    expected = {"lxrt_encoder.model." + k[len(""):] for k in original_pretraining_keys(1, 1, 1)
                if k.startswith("bert.")}
    assert {"lxrt_encoder." + k for k in keys} == expected


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip_same_outputs(tmp_path: Path, suffix: str):
    torch.manual_seed(0)
    model = LXMERTForPretraining(TINY).eval()
    path = save_state_dict(model.state_dict(), tmp_path / f"ckpt{suffix}")
    fresh = LXMERTForPretraining(TINY).eval()
    load_state(fresh, read_state_dict(path), strict=True, source=str(path))
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight
    ids = torch.randint(1, 100, (2, 6))
    feats, boxes = torch.randn(2, 5, TINY.visual_feat_dim), torch.rand(2, 5, 4)
    with torch.no_grad():
        a, b = model(ids, feats, boxes), fresh(ids, feats, boxes)
    torch.testing.assert_close(a.lang_logits, b.lang_logits, atol=0, rtol=0)
    torch.testing.assert_close(a.answer_logits, b.answer_logits, atol=0, rtol=0)


def test_dataparallel_prefix_and_lxrt_suffix(tmp_path: Path):
    model = LXMERTForPretraining(TINY)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "model_LXRT.pth")
    assert resolve_checkpoint(tmp_path / "model") == tmp_path / "model_LXRT.pth"
    encoder = TaskEncoder(TINY)
    report = load_encoder(encoder.bert, tmp_path / "model")
    assert not report.missing and not report.unexpected
    torch.testing.assert_close(encoder.bert.pooler.dense.weight, model.bert.pooler.dense.weight)


def test_shape_mismatch_names_key_file_and_shapes(tmp_path: Path):
    small = LXMERTForPretraining(TINY.replace(num_qa_labels=20))
    path = save_state_dict(small.state_dict(), tmp_path / "qa20.pth")
    other = LXMERTForPretraining(TINY.replace(num_qa_labels=30))
    with pytest.raises(CheckpointShapeError) as e:
        load_state(other, read_state_dict(path), source=str(path))
    msg = str(e.value)
    assert "answer_head.logit_fc.3.weight" in msg and "qa20.pth" in msg
    assert "(20, 64)" in msg and "(30, 64)" in msg


def test_strict_reports_missing_and_partial_load_reports(tmp_path: Path):
    model = LXMERTForPretraining(TINY)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("answer_head.")}
    target = LXMERTForPretraining(TINY)
    with pytest.raises(CheckpointError, match="answer_head.logit_fc.0.weight"):
        load_state(target, state, source="partial.pth")
    report = load_state(target, state, strict=False, source="partial.pth")
    assert report.missing == sorted(k for k in target.state_dict() if k.startswith("answer_head."))
    assert "in model but not in file" in report.summary()


def test_truncated_and_wrong_files_give_clear_errors(tmp_path: Path):
    path = save_state_dict(LXMERTForPretraining(TINY).state_dict(), tmp_path / "full.pth")
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_state_dict(cut)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth"):
        read_state_dict(text)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pth")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_state_dict(bad_st)


def test_atomic_save_keeps_previous_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The serializer writes half of its bytes, then fails: the old file is untouched, no temp file stays."""
    path = save_state_dict({"a": torch.ones(3)}, tmp_path / "w.pth")
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):  # f: the open temp file
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.EIO, "disk went away mid-write")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="mid-write"):
        save_state_dict({"a": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.equal(read_state_dict(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth"]


def test_remap_answer_head_copies_rows_by_normalized_answer():
    weight = torch.arange(12.0).view(4, 3)
    bias = torch.tensor([10.0, 11.0, 12.0, 13.0])
    src = ["cat", "dog", "2", "red"]
    new_w, new_b, found = remap_answer_head(weight, bias, src, ["Dog", "two", "blue"],
                                            normalize=lambda a: {"Dog": "dog", "two": "2"}.get(a, a))
    assert found == 2
    torch.testing.assert_close(new_w[0], weight[1])
    torch.testing.assert_close(new_w[1], weight[2])
    assert new_w[2].abs().sum() == 0 and new_b.tolist() == [11.0, 12.0, 0.0]


def test_multi_gpu_fine_tuned_snapshot_loads(tmp_path: Path):
    """The original's ``--multiGPU`` fine-tuning wraps the encoder inside the task model in DataParallel, so
    its BEST.pth keys read ``lxrt_encoder.model.module.bert.*``: the inner ``module.`` goes too, not only a
    leading one."""
    from tasks.models import Classifier

    model = Classifier(TINY, num_classes=7)
    wrapped = "lxrt_encoder.model.module."
    state = {k.replace("lxrt_encoder.model.", wrapped, 1): v for k, v in model.state_dict().items()}
    assert any(k.startswith("lxrt_encoder.model.module.bert.") for k in state)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "BEST.pth")  # and a wrapped whole model
    read = read_state_dict(tmp_path / "BEST.pth")
    assert sorted(read) == sorted(model.state_dict())
    fresh = Classifier(TINY, num_classes=7)
    load_state(fresh, read, strict=True, source="BEST.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
