"""The detector's network against a functional restatement computed straight from the state dict.

The restatement follows the published architecture of the released ``unc-nlp/frcnn-vg-finetuned`` weights
(detectron2's ResNet C4 with the Caffe max pool, as its PyTorch port runs it), written for this test with
``torch.nn.functional`` calls on the checkpoint's own key names and nothing from :mod:`features.butd.model`:

- stem: 7x7/2 conv (padding 3), BatchNorm (eps 1e-5, running statistics), ReLU, max pool 3x3/2 without padding,
  rounding the output size up;
- bottleneck: 1x1 conv carrying the stride, 3x3 conv (padding = dilation), 1x1 conv, each with BatchNorm,
  ReLU after the first two; a 1x1 projection shortcut (same stride) when the channel count changes, else the
  input; ReLU of the sum. res2..res4 strides 1, 2, 2; res5 (the VG variant) stride 1 and dilation 2;
- RPN: 3x3 conv + ReLU, 1x1 objectness (A per position) and 1x1 deltas (4A), flattened position-major
  (row, column, anchor); anchors: the cell anchors shifted by 16 px per map cell, same order;
- region feature: mean of res5 over the 14 x 14 map; predictor: class logits, class-specific box deltas, and
  attribute logits from ReLU(fc_attr([feature ; embedding of the argmax class])).

The unfolded network must equal the restatement bit for bit (the same operations in the same order); the folded
one (BatchNorm in the conv weights) within float rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from features.butd.model import ConvBN, Detector, DetectorConfig, cell_anchors
from features.butd.weights import random_state_dict

SMALL = DetectorConfig(width=8, stem_channels=16, blocks=(2, 2, 3, 2), rpn_hidden=32)
EPS = 1e-5


# ---- the restatement -----------------------------------------------------------------------------------------


def conv_bn(state: dict, key: str, x: torch.Tensor, stride: int = 1, padding: int = 0, dilation: int = 1):  # noqa: ANN201
    y = F.conv2d(x, state[f"{key}.weight"], None, stride, padding, dilation)
    bn = f"{key}.norm"
    return F.batch_norm(y, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                        state[f"{bn}.bias"], False, 0.0, EPS)  # fmt: skip


def bottleneck(state: dict, key: str, x: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    out = F.relu(conv_bn(state, f"{key}.conv1", x, stride))
    out = F.relu(conv_bn(state, f"{key}.conv2", out, 1, dilation, dilation))
    out = conv_bn(state, f"{key}.conv3", out)
    shortcut = conv_bn(state, f"{key}.shortcut", x, stride) if f"{key}.shortcut.weight" in state else x
    return F.relu(out + shortcut)


def stage(state: dict, key: str, x: torch.Tensor, stride: int, dilation: int = 1) -> torch.Tensor:
    i = 0
    while f"{key}.{i}.conv1.weight" in state:
        x = bottleneck(state, f"{key}.{i}", x, stride if i == 0 else 1, dilation)
        i += 1
    return x


def backbone(state: dict, image: torch.Tensor) -> torch.Tensor:
    x = F.relu(conv_bn(state, "backbone.stem.conv1", image, 2, 3))
    x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    for name, stride in (("res2", 1), ("res3", 2), ("res4", 2)):
        x = stage(state, f"backbone.{name}", x, stride)
    return x


def rpn(state: dict, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    key = "proposal_generator.rpn_head"
    hidden = F.relu(F.conv2d(feats, state[f"{key}.conv.weight"], state[f"{key}.conv.bias"], padding=1))
    logits = F.conv2d(hidden, state[f"{key}.objectness_logits.weight"], state[f"{key}.objectness_logits.bias"])
    deltas = F.conv2d(hidden, state[f"{key}.anchor_deltas.weight"], state[f"{key}.anchor_deltas.bias"])
    n, a, h, w = logits.shape
    flat_logits = torch.stack([logits[:, k, y, x] for y in range(h) for x in range(w) for k in range(a)], 1)
    flat_deltas = torch.stack([deltas[:, 4 * k : 4 * k + 4, y, x] for y in range(h) for x in range(w)
                               for k in range(a)], 1)  # fmt: skip
    cell = state["proposal_generator.anchor_generator.cell_anchors.0"]
    anchors = torch.stack([cell[k] + torch.tensor([16.0 * x, 16.0 * y, 16.0 * x, 16.0 * y])
                           for y in range(h) for x in range(w) for k in range(a)])  # fmt: skip
    return flat_logits, flat_deltas, anchors


def region_features(state: dict, pooled: torch.Tensor) -> torch.Tensor:
    return stage(state, "roi_heads.res5", pooled, 1, 2).mean(dim=(2, 3))


def predictor(state: dict, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    key = "roi_heads.box_predictor"
    scores = F.linear(feats, state[f"{key}.cls_score.weight"], state[f"{key}.cls_score.bias"])
    deltas = F.linear(feats, state[f"{key}.bbox_pred.weight"], state[f"{key}.bbox_pred.bias"])
    embedded = state[f"{key}.cls_embedding.weight"][scores.argmax(dim=1)]
    hidden = F.relu(F.linear(torch.cat([feats, embedded], 1), state[f"{key}.fc_attr.weight"],
                             state[f"{key}.fc_attr.bias"]))  # fmt: skip
    return scores, F.linear(hidden, state[f"{key}.attr_score.weight"], state[f"{key}.attr_score.bias"]), deltas


# ---- the comparison ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state_dict(5, SMALL)


@pytest.fixture(scope="module")
def model(state: dict) -> Detector:
    net = Detector(SMALL)
    net.load_state_dict(state)
    return net.eval()


@pytest.mark.parametrize("size", [(69, 85), (64, 96)])  # odd sizes: the max pool's rounding up shows
@torch.inference_mode()
def test_network_equals_the_restatement(state: dict, model: Detector, size: tuple[int, int]) -> None:
    image = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    feats = model.backbone(image)
    assert torch.equal(feats, backbone(state, image))
    logits, deltas = model.proposal_generator.rpn_head(feats)
    ref_logits, ref_deltas, ref_anchors = rpn(state, feats)
    assert torch.equal(logits, ref_logits) and torch.equal(deltas, ref_deltas)
    assert torch.equal(model.proposal_generator.anchor_generator(feats.shape[2], feats.shape[3]), ref_anchors)
    pooled = torch.randn(5, SMALL.res4_channels, 14, 14, generator=torch.Generator().manual_seed(1))
    region = model.region_features(pooled)
    assert torch.equal(region, region_features(state, pooled))
    for got, expected in zip(model.roi_heads.box_predictor(region * 40), predictor(state, region * 40)):
        assert torch.equal(got, expected)


@torch.inference_mode()
def test_folded_network_equals_the_restatement_up_to_rounding(state: dict) -> None:
    """Folding BatchNorm (and merging each first block's conv1 with its shortcut) changes only the rounding."""
    folded = Detector(SMALL)
    folded.load_state_dict(state)
    folded.eval().fold_batchnorm()
    merged = [name for name, m in folded.named_modules() if getattr(m, "merged_weight", None) is not None]
    assert merged == [f"{s}.0" for s in ("backbone.res2", "backbone.res3", "backbone.res4", "roi_heads.res5")]
    image = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    expected = backbone(state, image)
    got = folded.backbone(image)
    assert not torch.equal(got, expected)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    pooled = torch.randn(3, SMALL.res4_channels, 14, 14, generator=torch.Generator().manual_seed(4))
    ref = region_features(state, pooled)
    torch.testing.assert_close(folded.region_features(pooled), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_batchnorm_folding_formula() -> None:
    """weight * gamma / sqrt(var + eps) and beta - mean * gamma / sqrt(var + eps), with variances near eps."""
    conv = ConvBN(3, 4, 3, eps=EPS)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 3, 3, generator=gen))
        conv.norm.weight.copy_(torch.randn(4, generator=gen))
        conv.norm.bias.copy_(torch.randn(4, generator=gen))
        conv.norm.running_mean.copy_(torch.randn(4, generator=gen))
        conv.norm.running_var.copy_(torch.tensor([2e-5, 1e-4, 0.5, 3.0]))
    weight, bias = conv.folded()
    scale = conv.norm.weight / torch.sqrt(conv.norm.running_var + EPS)
    torch.testing.assert_close(weight, conv.weight * scale[:, None, None, None], rtol=1e-6, atol=0)
    torch.testing.assert_close(bias, conv.norm.bias - conv.norm.running_mean * scale, rtol=1e-6, atol=1e-6)


def test_cell_anchors_are_size_major_with_area_size_squared() -> None:
    got = cell_anchors((64.0, 128.0), (0.5, 1.0, 2.0))
    assert got.dtype == torch.float32 and got.shape == (6, 4)
    for row, (size, ratio) in zip(got.tolist(), [(s, r) for s in (64.0, 128.0) for r in (0.5, 1.0, 2.0)]):
        w = math.sqrt(size * size / ratio)
        assert row == pytest.approx([-w / 2, -ratio * w / 2, w / 2, ratio * w / 2], rel=1e-6)
