"""The detector presets' pixel preparation and per-class selection, pinned case by case.

The ``lxmert`` preset must prepare an image as the original extraction did (BGR pixels, the Caffe means
subtracted channel by channel, ``cv2.resize(fx=fy=scale)``); ``hf-demo`` as the HF port does for a local
file (RGB pixels minus the same, BGR-ordered, means). OpenCV, when installed, is the reference for the
resize itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from features.butd import ops
from features.butd.pipeline import select_per_class
from features.butd.presets import PRESETS, get_preset, preprocess, resized_size

BLUE_MEAN, GREEN_MEAN, RED_MEAN = 102.9801, 115.9465, 122.7717  # the Caffe means, B G R


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---- resize ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((333, 500), (600, 901)),  # 500 * 600 / 333 = 900.9: rounded up, not truncated
        ((500, 333), (901, 600)),
        ((480, 640), (600, 800)),
        ((400, 403), (600, 604)),  # 604.5: cv2 rounds an exact half to even
        ((400, 401), (600, 602)),  # 601.5 -> 602 (even)
        ((300, 1200), (250, 1000)),  # 600 / 300 * 1200 = 2400 > 1000: the long side is capped
        ((599, 998), (600, 1000)),  # 999.67 rounds to 1000, not above the cap: the short side stays 600
    ],
)
def test_lxmert_resize_rounds_the_new_size_as_cv2_does(size: tuple[int, int], expected: tuple[int, int]) -> None:
    height, width = size
    new_h, new_w, scale = resized_size(height, width, PRESETS["lxmert"])
    assert (new_h, new_w) == expected
    prepared = preprocess(Image.fromarray(random_image(height, width)), PRESETS["lxmert"])
    assert prepared.net_size == expected
    assert prepared.resize_scale == pytest.approx(scale)
    assert prepared.scale_x == pytest.approx(1 / scale) and prepared.scale_y == pytest.approx(1 / scale)


def test_hf_demo_resize_keeps_its_own_rule() -> None:
    assert resized_size(333, 500, PRESETS["hf-demo"])[:2] == (800, 1201)
    assert resized_size(1000, 200, PRESETS["hf-demo"])[:2] == (1333, 267)


# ---- colour order and means -----------------------------------------------------------------------------


def test_channel_order_and_means_of_each_preset() -> None:
    """At the network's own size (no resampling), channel 0 of a pixel is its blue value minus the blue
    mean under ``lxmert`` and its red value minus the blue mean under ``hf-demo``; every channel is pinned."""
    for name, size in (("lxmert", (600, 800)), ("hf-demo", (800, 1000))):
        rgb = random_image(*size, seed=3)
        prepared = preprocess(Image.fromarray(rgb), PRESETS[name])
        assert prepared.net_size == size and prepared.resize_scale == 1.0
        got = prepared.pixels.numpy()
        red, green, blue = (rgb[..., c].astype(np.float32) for c in range(3))
        first, third = (blue, red) if name == "lxmert" else (red, blue)
        np.testing.assert_allclose(got[0], first - BLUE_MEAN, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got[1], green - GREEN_MEAN, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got[2], third - RED_MEAN, rtol=0, atol=1e-4)
    pixel = Image.new("RGB", (4, 3), (200, 100, 50))  # a flat colour survives any resize unchanged
    lx = preprocess(pixel, PRESETS["lxmert"]).pixels[:, 0, 0].tolist()
    hf = preprocess(pixel, PRESETS["hf-demo"]).pixels[:, 0, 0].tolist()
    assert lx == pytest.approx([50 - BLUE_MEAN, 100 - GREEN_MEAN, 200 - RED_MEAN], abs=1e-4)
    assert hf == pytest.approx([200 - BLUE_MEAN, 100 - GREEN_MEAN, 50 - RED_MEAN], abs=1e-4)


@pytest.mark.parametrize("size", [(333, 500), (400, 403), (427, 640), (640, 427), (300, 1200), (1000, 120)])
def test_lxmert_blob_is_the_cv2_resize_of_the_original(size: tuple[int, int]) -> None:
    """The original's blob: BGR float32 minus the means, then ``cv2.resize(None, fx=s, fy=s, INTER_LINEAR)``
    (which samples at (x + 0.5) / s - 0.5; sampling at the size ratio instead moves pixels by up to 0.3)."""
    cv2 = pytest.importorskip("cv2")
    rgb = random_image(*size, seed=5)
    means = np.array([BLUE_MEAN, GREEN_MEAN, RED_MEAN], dtype=np.float32)
    bgr = rgb[:, :, ::-1].astype(np.float32) - means
    short, long = min(size), max(size)
    scale = 600 / short
    if np.round(scale * long) > 1000:
        scale = 1000 / long
    expected = cv2.resize(bgr, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    got = preprocess(Image.fromarray(rgb), PRESETS["lxmert"]).pixels.permute(1, 2, 0).numpy()
    assert got.shape == expected.shape
    # cv2 keeps its source positions in float32: ~1e-4 of a pixel, up to ~0.03 in values of +-150
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)


# ---- per-class NMS at its boundary ----------------------------------------------------------------------


def test_per_class_nms_keeps_a_box_at_exactly_the_threshold() -> None:
    """lxmert's per-class NMS (0.3) drops a box only when its IoU is *above* 0.3: a box inside another
    with 3/10 of its area (IoU exactly 0.3 in float32) survives in every class."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0], [20.0, 0.0, 30.0, 1.0]])
    assert float(ops.box_iou(boxes[:1], boxes[1:2])) == np.float32(0.3)
    probs = torch.tensor([[0.60, 0.10], [0.50, 0.10], [0.05, 0.05]])
    mask = ops.multiclass_nms_mask(boxes, probs, PRESETS["lxmert"].nms_thresholds[0])
    assert mask[:, 0].tolist() == [True, True, True]
    assert mask[:, 1].tolist() == [True, True, True]
    preset = PRESETS["lxmert"].with_options(min_boxes=1, max_boxes=36)
    assert select_per_class(probs, preset, boxes).tolist() == [0, 1]  # box 2 is below 0.2
    # a hair more overlap: box 1 is suppressed in both classes and has no surviving score
    closer = boxes.clone()
    closer[1, 2] = 3.01
    assert ops.multiclass_nms_mask(closer, probs, 0.3)[:, 0].tolist() == [True, False, True]
    assert select_per_class(probs, preset, closer).tolist() == [0]


def test_preset_lookup_options_and_their_checks() -> None:
    assert get_preset("lxmert") is PRESETS["lxmert"] and get_preset("hf-demo") is PRESETS["hf-demo"]
    with pytest.raises(ValueError) as err:
        get_preset("caffe")
    assert str(err.value) == "unknown detector preset 'caffe'; choose one of lxmert, hf-demo"
    lx = PRESETS["lxmert"]
    assert lx.with_options(short_side=1, max_side=1).short_side == 1  # the smallest sizes allowed
    assert lx.with_options(min_boxes=1, max_boxes=1, short_side=None).short_side == 600  # None: unchanged
    for bad, message in (
        (dict(min_boxes=0), "need 1 <= min_boxes <= max_boxes, got 0 and 36"),
        (dict(min_boxes=40), "need 1 <= min_boxes <= max_boxes, got 40 and 36"),
        (dict(short_side=0), "need 1 <= short_side <= max_side, got 0 and 1000"),
        (dict(short_side=700, max_side=600), "need 1 <= short_side <= max_side, got 700 and 600"),
    ):
        with pytest.raises(ValueError) as err:
            lx.with_options(**bad)
        assert str(err.value) == message


def test_scales_and_sizes_of_both_rules() -> None:
    assert resized_size(599, 998, PRESETS["lxmert"])[2] == 600 / 599  # rounds to 1000, not above: uncapped
    assert resized_size(300, 1200, PRESETS["lxmert"])[2] == 1000 / 1200
    h, w, scale = resized_size(500, 1500, PRESETS["hf-demo"])
    assert (h, w) == (444, 1333) and scale == pytest.approx(800 / 500 * 1333 / 2400)
    rgb = random_image(150, 200, seed=9)
    prepared = preprocess(Image.fromarray(rgb), PRESETS["hf-demo"])
    assert (prepared.height, prepared.width, prepared.net_size) == (150, 200, (800, 1067))
    assert prepared.scale_y == float(np.float32(150) / np.float32(800))
    assert prepared.scale_x == float(np.float32(200) / np.float32(1067))
    assert prepared.resize_scale == 800 / 150
    # the HF port's resize: F.interpolate to the new size, half-pixel centres (align_corners=False)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    expected = F.interpolate(x, size=(800, 1067), mode="bilinear", align_corners=False)[0]
    means = torch.tensor([BLUE_MEAN, GREEN_MEAN, RED_MEAN]).reshape(3, 1, 1)
    torch.testing.assert_close(prepared.pixels, expected - means, rtol=0, atol=1e-4)
    lx = preprocess(Image.fromarray(rgb), PRESETS["lxmert"])
    assert (lx.height, lx.width) == (150, 200)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_any_image_mode_is_prepared_as_its_rgb_version(mode: str) -> None:
    image = Image.fromarray(random_image(60, 80, seed=2)).convert(mode)
    for preset in PRESETS.values():
        got = preprocess(image, preset)
        expected = preprocess(image.convert("RGB"), preset)
        assert torch.equal(got.pixels, expected.pixels) and got.pixels.shape[0] == 3
