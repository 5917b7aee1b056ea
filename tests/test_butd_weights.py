"""The detector's state dict is the released key list, and weights files load strictly or fail clearly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from features.butd.model import Detector, DetectorConfig
from features.butd.weights import WeightsError, load_weights, random_state_dict, save_random_weights

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
    with pytest.raises(WeightsError, match=r"pytorch_model\.bin: not a readable .*HTML page"):
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
