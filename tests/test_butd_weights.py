"""The detector's state dict is the released key list, and weights files load strictly or fail clearly."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from features.butd.model import ConvBN, Detector, DetectorConfig, cell_anchors
from features.butd.weights import WeightsError, load_weights, random_state_dict, read_weights, save_random_weights

KEYS = Path(__file__).parent / "data" / "butd_keys.txt"  # names/shapes/dtypes of the public checkpoint
SMALL = DetectorConfig(width=4, stem_channels=8, blocks=(1, 1, 2, 1), rpn_hidden=16, num_classes=20, num_attrs=6)


def released_keys() -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape, dtype = line.split("\t")
            dims = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
            rows.append((name, dims, dtype))
    return rows


@pytest.fixture(scope="module")
def random_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_weights(tmp_path_factory.mktemp("w") / "pytorch_model.bin", seed=3)


def test_random_state_dict_is_exactly_the_released_key_list() -> None:
    expected = released_keys()
    assert len(expected) == 640
    state = random_state_dict(1)
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    assert got == expected
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    var = torch.cat([v for k, v in state.items() if k.endswith("running_var")])
    assert float(var.min()) > 0.75 and float(var.max()) < 1.25
    anchors = state["proposal_generator.anchor_generator.cell_anchors.0"]
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    # size-major: sizes 64..512, ratios h/w 0.5, 1, 2, centred on 0
    torch.testing.assert_close(
        (widths * heights).sqrt(), torch.tensor([64.0] * 3 + [128.0] * 3 + [256.0] * 3 + [512.0] * 3)
    )
    torch.testing.assert_close(heights / widths, torch.tensor([0.5, 1.0, 2.0] * 4))
    torch.testing.assert_close(anchors[:, :2], -anchors[:, 2:])


def test_random_weights_are_seeded() -> None:
    a, b, c = random_state_dict(5, SMALL), random_state_dict(5, SMALL), random_state_dict(6, SMALL)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.stem.conv1.weight"], c["backbone.stem.conv1.weight"])


def test_file_loads_strictly(random_file: Path) -> None:
    model = load_weights(Detector(), random_file)
    saved = torch.load(random_file, weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def _broken(tmp_path: Path, random_file: Path, change) -> Path:
    state = torch.load(random_file, weights_only=True)
    change(state)
    out = tmp_path / "broken.bin"
    torch.save(state, out)
    return out


def test_renamed_key_is_named(tmp_path: Path, random_file: Path) -> None:
    def rename(state: dict) -> None:
        state["roi_heads.box_predictor.cls_score.weights"] = state.pop("roi_heads.box_predictor.cls_score.weight")

    path = _broken(tmp_path, random_file, rename)
    with pytest.raises(WeightsError) as err:
        load_weights(Detector(), path)
    text = str(err.value)
    assert str(path) in text
    assert "in model but not in file (1): roi_heads.box_predictor.cls_score.weight\n" in text
    assert "in file but not in model (1): roi_heads.box_predictor.cls_score.weights\n" in text
    assert "detector has 640 entries, the file 640" in text


def test_reshaped_key_is_named(tmp_path: Path, random_file: Path) -> None:
    def reshape(state: dict) -> None:
        state["roi_heads.box_predictor.attr_score.bias"] = torch.zeros(400)

    path = _broken(tmp_path, random_file, reshape)
    key = re.escape("'roi_heads.box_predictor.attr_score.bias'")
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: parameter {key} has shape \(400,\) in the "
                       r"file but \(401,\) in the model"):
        load_weights(Detector(), path)


def test_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    html = tmp_path / "pytorch_model.bin"
    html.write_text("<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(WeightsError, match=r"pytorch_model\.bin: not a readable .*HTML page, not the detector's "):
        load_weights(Detector(SMALL), html)
    with pytest.raises(FileNotFoundError, match="no such detector weights file"):
        load_weights(Detector(SMALL), tmp_path / "absent.bin")


def test_folding_batchnorm_keeps_the_outputs() -> None:
    model = Detector(SMALL)
    model.load_state_dict(random_state_dict(2, SMALL))
    model.eval()
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0)) * 50
    with torch.inference_mode():
        plain = model.backbone(x)
        pooled = torch.randn(3, SMALL.res4_channels, 14, 14, generator=torch.Generator().manual_seed(1))
        plain_r5 = model.region_features(pooled)
        model.fold_batchnorm()
        torch.testing.assert_close(model.backbone(x), plain, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.region_features(pooled), plain_r5, rtol=1e-4, atol=1e-4)
    assert list(model.state_dict()) == list(Detector(SMALL).state_dict())  # folding adds no keys


def test_cli_reports_a_missing_file(tmp_path: Path) -> None:
    out = tmp_path / "r.bin"
    src = str(Path(__file__).resolve().parents[1] / "src")
    res = subprocess.run(
        [sys.executable, "-m", "features.butd.weights", "--check", str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src},
        check=False,
    )
    assert res.returncode == 2 and "no such detector weights file" in res.stderr


def _spread(t: torch.Tensor, std: float, what: str) -> None:
    """``t`` looks drawn from N(0, std): its standard deviation within a few standard errors of ``std``."""
    n = t.numel()
    tol = 6 / math.sqrt(2 * n)
    got = float(t.float().std()) if n > 1 else abs(float(t))
    assert abs(got / std - 1) < max(tol, 0.05) or (n < 8 and got < 4 * std), (what, got, std)


def _within(t: torch.Tensor, lo: float, hi: float, what: str) -> None:
    assert lo <= float(t.min()) and float(t.max()) <= hi, (what, float(t.min()), float(t.max()))
    if t.numel() >= 64:  # drawn over the whole interval, not a corner of it
        span = hi - lo
        assert float(t.min()) < lo + 0.25 * span and float(t.max()) > hi - 0.25 * span, what


def test_random_weights_have_the_documented_scales() -> None:
    """Convolutions He-initialised (the stem's 1/60 of it, for pixels of about +-60); BatchNorm near identity:
    scale in [0.8, 1.2] (the last of each residual branch in [0.16, 0.24]), shift and running mean N(0, 0.1),
    running variance in [0.8, 1.2], no batches tracked; the heads' small normal weights; the real cell anchors."""
    state = random_state_dict(4, SMALL)
    model = Detector(SMALL)
    for name, module in model.named_modules():
        if isinstance(module, ConvBN):
            w = state[f"{name}.weight"]
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            gain = 1 / 60 if w.shape[1] == 3 else 1.0
            _spread(w, gain * math.sqrt(2 / fan_in), name)
            scale = 0.2 if name.endswith("conv3") else 1.0
            _within(state[f"{name}.norm.weight"], 0.8 * scale, 1.2 * scale, name)
            _spread(state[f"{name}.norm.bias"], 0.1, name)
            _spread(state[f"{name}.norm.running_mean"], 0.1, name)
            _within(state[f"{name}.norm.running_var"], 0.8, 1.2, name)
            assert int(state[f"{name}.norm.num_batches_tracked"]) == 0
    stds = {
        "proposal_generator.rpn_head.conv": 0.01,
        "proposal_generator.rpn_head.objectness_logits": 0.01,
        "proposal_generator.rpn_head.anchor_deltas": 0.003,
        "roi_heads.box_predictor.cls_score": 0.01,
        "roi_heads.box_predictor.bbox_pred": 0.001,
        "roi_heads.box_predictor.fc_attr": 0.02,
        "roi_heads.box_predictor.attr_score": 0.02,
    }
    for name, std in stds.items():
        _spread(state[f"{name}.weight"], std, name)
        _spread(state[f"{name}.bias"], std, name)
    _spread(state["roi_heads.box_predictor.cls_embedding.weight"], 1.0, "cls_embedding")
    anchors = state["proposal_generator.anchor_generator.cell_anchors.0"]
    assert torch.equal(anchors, cell_anchors(SMALL.anchor_sizes, SMALL.anchor_ratios))


def test_weights_saved_under_a_state_dict_key_load(tmp_path: Path) -> None:
    """A file holding ``{"state_dict": ...}`` is unwrapped; a mapping with other values is refused by name."""
    state = random_state_dict(0, SMALL)
    wrapped = tmp_path / "wrapped.bin"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    model = load_weights(Detector(SMALL), wrapped)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    odd = tmp_path / "odd.bin"
    torch.save({"a": torch.zeros(1), "b": 3}, odd)
    with pytest.raises(WeightsError, match=r"odd\.bin: expected a mapping of parameter names to tensors, got dict"):
        read_weights(odd)
    listed = tmp_path / "list.bin"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match=r"list\.bin: expected a mapping .*, got list"):
        read_weights(listed)


def test_cli_writes_random_weights_and_checks_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--random OUT --seed N`` writes seed N's weights and says so; ``--check`` reports a file that loads;
    a file that does not load is one ``error:`` line and exit status 2."""
    import features.butd.weights as weights

    monkeypatch.setattr(weights, "Detector", lambda cfg=None: Detector(cfg or SMALL))
    monkeypatch.setattr(weights, "save_random_weights", lambda path, seed: save_random_weights(path, seed, SMALL))
    out = tmp_path / "r.bin"
    assert weights.main(["--random", str(out), "--seed", "7"]) == 0
    assert capsys.readouterr().out == f"Wrote random detector weights (seed 7) to {out}\n"
    saved = torch.load(out, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in random_state_dict(7, SMALL).items())
    assert weights.main(["--random", str(out)]) == 0 and "(seed 0)" in capsys.readouterr().out
    assert weights.main(["--check", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: loads strictly into the detector\n"
    out.write_text("<html>")
    assert weights.main(["--check", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: not a readable PyTorch state dict") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        weights.main([])  # one of --random / --check is required


def test_the_command_line_and_defaults_are_as_documented(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``python -m features.butd.weights --random OUT.bin [--seed N]`` / ``--check FILE``, seed 0 by default (the
    functions' default too); the help names each option's purpose."""
    import features.butd.weights as weights

    with pytest.raises(SystemExit):
        weights.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    usage = "usage: python -m features.butd.weights [-h] (--random OUT.bin | --check FILE) [--seed SEED]"
    about = "Write random detector weights with the released key list, or check a weights file."
    assert text.startswith(f"{usage} {about} ")
    for line in (
        "--random OUT.bin write random weights to this file",
        "--check FILE load FILE strictly and report mismatches",
        "--seed SEED random seed for --random (default 0)",
    ):
        assert line in text, line
    a, b = random_state_dict(cfg=SMALL), random_state_dict(0, SMALL)
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(save_random_weights(tmp_path / "r.bin", cfg=SMALL), weights_only=True)
    assert all(torch.equal(saved[k], b[k]) for k in b)
