"""Checkpoint I/O rules one by one: which file a name means, what a load reports, where the encoder is found,
how answer rows move, and what each unreadable file is called."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lxrt import (
    CheckpointError,
    CheckpointShapeError,
    LoadReport,
    encoder_state,
    load_state,
    read_state_dict,
    remap_answer_head,
    resolve_checkpoint,
    save_state_dict,
)


def test_a_checkpoint_name_means_the_first_file_that_exists(tmp_path: Path) -> None:
    for name in ("model", "model.pth", "model_LXRT.pth"):
        (tmp_path / name).write_bytes(b"x")
    assert resolve_checkpoint(tmp_path / "model") == tmp_path / "model"
    (tmp_path / "model").unlink()
    assert resolve_checkpoint(tmp_path / "model") == tmp_path / "model.pth"
    (tmp_path / "model.pth").unlink()
    assert resolve_checkpoint(tmp_path / "model") == tmp_path / "model_LXRT.pth"
    assert resolve_checkpoint(tmp_path / "model", suffixes=("_LXRT.pth",)) == tmp_path / "model_LXRT.pth"
    (tmp_path / "dir.pth").mkdir()  # a folder is not a checkpoint
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(tmp_path / "dir")
    tried = [tmp_path / "dir", tmp_path / "dir.pth", tmp_path / "dir_LXRT.pth"]
    assert str(err.value) == f"checkpoint not found: tried {', '.join(map(str, tried))}"


def test_load_report_lists_at_most_eight_keys_of_each_kind() -> None:
    report = LoadReport("f.pth", 3, missing=[f"m{i}" for i in range(10)], unexpected=["u1", "u2"])
    assert report.summary() == (
        "loaded 3 tensors from f.pth\n"
        "  in model but not in file (10): m0, m1, m2, m3, m4, m5, m6, m7, ... (2 more)\n"
        "  in file but not in model (2): u1, u2"
    )
    assert report.summary(limit=2).splitlines()[1] == "  in model but not in file (10): m0, m1, ... (8 more)"
    assert LoadReport("g.pth", 0).summary() == "loaded 0 tensors from g.pth"
    assert LoadReport("h.pth", 1, missing=["a"] * 8).summary().endswith("(8): a, a, a, a, a, a, a, a")


def test_load_state_strictness_and_ignored_prefixes() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items() if k.startswith("0.")}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_state(model, state, source="part.pth")
    assert str(err.value) == (
        "part.pth does not match the model (strict load):\nloaded 2 tensors from part.pth\n"
        "  in model but not in file (2): 1.bias, 1.weight\n  in file but not in model (1): extra.weight"
    )
    assert not torch.equal(model[0].weight, torch.full_like(model[0].weight, 0.5))  # nothing copied
    del state["extra.weight"]
    report = load_state(model, state, source="part.pth", ignore_missing=("1.",))  # strict, the head may be absent
    assert (report.loaded, report.missing, report.unexpected) == (2, [], [])
    assert torch.equal(model[0].weight, torch.full_like(model[0].weight, 0.5))
    report = load_state(model, state, strict=False, ignore_missing=("1.w",))
    assert report.missing == ["1.bias"] and report.source == "<state dict>"
    with pytest.raises(CheckpointError, match="in model but not in file"):
        load_state(model, state, ignore_missing=("2.",))
    state["1.weight"] = torch.zeros(4, 3)
    with pytest.raises(CheckpointShapeError) as err:
        load_state(model, state, strict=False, source="s.pth")
    assert str(err.value) == (
        "s.pth: parameter '1.weight' has shape (4, 3) in the file but (1, 3) in the model "
        "(a checkpoint of another task or size?)"
    )


def test_the_encoder_is_found_under_each_known_prefix_in_order() -> None:
    w = torch.ones(1)
    for prefix in ("lxrt_encoder.model.bert.", "bert.", "lxmert."):
        assert encoder_state({prefix + "pooler.dense.weight": w, "logit_fc.0.weight": w}) == {"pooler.dense.weight": w}
    both = {"bert.a": torch.zeros(1), "lxrt_encoder.model.bert.b": torch.ones(1)}
    assert list(encoder_state(both)) == ["b"]  # a fine-tuned snapshot's encoder first
    with pytest.raises(CheckpointError) as err:
        encoder_state({"cls.x": w}, source="heads.pth")
    assert str(err.value) == (
        "heads.pth: no encoder weights found (expected keys starting with one of "
        "('lxrt_encoder.model.bert.', 'bert.', 'lxmert.'))"
    )


def test_answer_rows_follow_the_answers() -> None:
    weight = torch.arange(6.0).reshape(3, 2)
    bias = torch.tensor([10.0, 11.0, 12.0])
    new_w, new_b, found = remap_answer_head(weight, bias, ["cat", "dog", "two"], ["two", "bird", "cat"], str.lower)
    assert new_w.tolist() == [[4.0, 5.0], [0.0, 0.0], [0.0, 1.0]] and new_b.tolist() == [12.0, 0.0, 10.0]
    assert found == 2
    with pytest.raises(CheckpointShapeError) as err:
        remap_answer_head(weight, bias, ["cat", "dog"], ["cat"], str.lower)
    assert str(err.value) == "pretrained answer head has 3 rows but the answer table has 2"


class Payload:
    """Pickled by reference: a file holding it must be refused, not executed."""


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "none.pth")
    assert str(err.value) == f"checkpoint not found: {tmp_path / 'none.pth'}"
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "obj": Payload()}, evil)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(evil)
    assert str(err.value).startswith(f"{evil} holds Python objects other than tensors and plain data (")
    assert "Payload)" in str(err.value) and "Expected a PyTorch checkpoint saved by this code" in str(err.value)
    listed = save_state_dict({"w": torch.ones(1)}, tmp_path / "ok.pth")
    torch.save([torch.ones(1)], listed)
    with pytest.raises(CheckpointError, match=r"ok.pth: expected a state dict \(name -> tensor\), got list$"):
        read_state_dict(listed)
    torch.save({"model": {"a.module.b": torch.ones(2)}, "optimizer": {}}, listed)  # a full training checkpoint
    assert list(read_state_dict(listed)) == ["a.b"]
    cut = tmp_path / "cut.pth"
    cut.write_bytes(listed.read_bytes()[:-30])
    with pytest.raises(CheckpointError, match=r"cut.pth is a truncated zip archive \(an interrupted download\?\)"):
        read_state_dict(cut)


def test_tied_tensors_in_safetensors_files(tmp_path: Path) -> None:
    """Tensors sharing storage are stored once and restored under every name (several pairs); a safetensors
    file written elsewhere, without the metadata, reads as it is."""
    from safetensors.torch import save_file

    shared, other = torch.arange(4.0), torch.ones(2)
    state = {"a": shared, "b": shared, "c": shared, "d": other, "e": other}
    read = read_state_dict(save_state_dict(state, tmp_path / "tied.safetensors"))
    assert sorted(read) == ["a", "b", "c", "d", "e"]
    assert all(torch.equal(read[k], shared) for k in "abc") and torch.equal(read["e"], other)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    assert list(read_state_dict(tmp_path / "plain.safetensors")) == ["x"]
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(CheckpointError, match=r"page.safetensors is .*, not a safetensors file"):
        read_state_dict(tmp_path / "page.safetensors")


def test_encoder_loading_is_strict_and_names_the_file(tmp_path: Path) -> None:
    from lxrt import LXRTConfig, LXRTModel, load_encoder

    encoder = LXRTModel(LXRTConfig.tiny())
    state = {"bert." + k: v for k, v in encoder.state_dict().items() if "pooler" not in k}
    path = save_state_dict(state, tmp_path / "model_LXRT.pth")
    with pytest.raises(CheckpointError) as err:
        load_encoder(LXRTModel(LXRTConfig.tiny()), tmp_path / "model")
    assert str(err.value).startswith(f"{path} does not match the model (strict load):\nloaded ")
    assert "pooler.dense.weight" in str(err.value)
    report = load_encoder(LXRTModel(LXRTConfig.tiny()), tmp_path / "model", strict=False)
    assert report.source == str(path) and report.missing == ["pooler.dense.bias", "pooler.dense.weight"]
    save_state_dict({"cls.x": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: no encoder weights found"):
        load_encoder(encoder, tmp_path / "model")
    with pytest.raises(CheckpointError, match="^<state dict>: no encoder weights found"):
        encoder_state({"cls.x": torch.ones(1)})


def test_torch_load_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lxrt.checkpoint import torch_load

    with pytest.raises(CheckpointError) as err:
        torch_load(tmp_path / "w.bin", expected="the detector's weights")
    assert str(err.value) == f"The detector's weights was expected at {tmp_path / 'w.bin'}: no such file"
    with pytest.raises(CheckpointError) as err:
        torch_load(tmp_path / "w.bin")
    assert str(err.value) == f"A PyTorch checkpoint was expected at {tmp_path / 'w.bin'}: no such file"
    (tmp_path / "page.bin").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(CheckpointError, match=r"page.bin is .*, not the detector's weights"):
        torch_load(tmp_path / "page.bin", expected="the detector's weights")
    good = save_state_dict({"w": torch.ones(1)}, tmp_path / "good.pth")

    def failing(error: Exception):
        def load(*args, **kwargs):
            raise error

        return load

    import pickle

    monkeypatch.setattr(torch, "load", failing(pickle.UnpicklingError("Weights only load failed")))
    with pytest.raises(CheckpointError) as err:
        torch_load(good)
    assert str(err.value).startswith(f"{good} holds Python objects other than tensors and plain data; refused,")
    for error, tail in ((RuntimeError("first line\nsecond line"), ": first line"), (EOFError(), ": EOFError")):
        monkeypatch.setattr(torch, "load", failing(error))
        with pytest.raises(CheckpointError) as err:
            torch_load(good)
        assert str(err.value).startswith(f"{good} is not a readable PyTorch checkpoint (it looks like ")
        assert "; truncated or corrupt download?)" in str(err.value) and str(err.value).endswith(tail)
