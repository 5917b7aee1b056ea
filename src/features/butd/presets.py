"""The two documented pre/post-processing settings of the detector, and image preprocessing.

``lxmert`` (default) follows the original extraction scripts that made the released obj36 TSVs:
BGR pixels minus the Caffe means, shorter side 600 / longer side <= 1000, RPN proposals with a side
under 16 x the resize scale dropped before the top 6000, NMS 0.7, 300 proposals; then per class NMS
0.3 on the proposals, each proposal scored by its best class where it survived, confidence >= 0.2,
and between ``min_boxes`` and ``max_boxes`` (36 and 36) proposals kept. The boxes are the proposals.

``hf-demo`` follows the HF LXMERT demo's port: shorter side 800 / longer <= 1333, top 6000 proposals
clipped, empty ones dropped, NMS 0.7, 300 kept; each proposal's box regressed for its best class,
class-agnostic NMS at 0.5, then 0.6, then 0.7 until ``min_boxes`` survive, the top ``max_boxes`` kept
(no confidence threshold). Colour order: the demo's config says BGR, but its loader hands a local file
to the network as RGB (only a URL reaches it as BGR). This preset reproduces what the demo does for a
local file, i.e. RGB pixels minus the (BGR-ordered) Caffe means.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CAFFE_MEANS = (102.9801, 115.9465, 122.7717)


@dataclass(frozen=True)
class Preset:
    """Every choice that differs between the two settings (see the module docstring)."""

    name: str
    short_side: int
    max_side: int
    size_rule: Literal["caffe", "detectron"]  # how the resize scale and the new size are computed
    channels: Literal["BGR", "RGB"]
    pixel_mean: tuple[float, float, float] = CAFFE_MEANS
    rpn_nms: float = 0.7
    rpn_pre_nms: int = 6000
    rpn_post_nms: int = 300
    rpn_min_size: float = 0.0  # proposals with a side under this x the resize scale are dropped
    selection: Literal["per-class", "class-agnostic"] = "per-class"
    nms_thresholds: tuple[float, ...] = (0.3,)
    conf_threshold: float | None = 0.2
    min_boxes: int = 36
    max_boxes: int = 36
    attr_softmax: Literal["all", "attributes"] = "all"  # softmax over all 401 logits, or the 400 attributes
    # Fold BatchNorm into the convs and run channels-last (1.3-1.6x faster on a CPU). Off (the default):
    # conv then BatchNorm in NCHW, the usual arithmetic, with which the HF port's outputs are reproduced
    # bit for bit on the CPU; the folded rounding (~1e-4 in the RPN logits of a 100-layer net) can flip
    # near-tied top-k/NMS choices against another implementation.
    fast_numerics: bool = False

    def with_options(self, **changes: object) -> Preset:
        """A copy with some fields changed (None values are ignored); checks the box counts."""
        preset = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        if not 1 <= preset.min_boxes <= preset.max_boxes:
            raise ValueError(f"need 1 <= min_boxes <= max_boxes, got {preset.min_boxes} and {preset.max_boxes}")
        if preset.short_side < 1 or preset.max_side < preset.short_side:
            raise ValueError(f"need 1 <= short_side <= max_side, got {preset.short_side} and {preset.max_side}")
        return preset


PRESETS: dict[str, Preset] = {
    "lxmert": Preset(
        name="lxmert",
        short_side=600,
        max_side=1000,
        size_rule="caffe",
        channels="BGR",
        rpn_min_size=16.0,
        selection="per-class",
        nms_thresholds=(0.3,),
        conf_threshold=0.2,
        attr_softmax="all",
    ),
    "hf-demo": Preset(
        name="hf-demo",
        short_side=800,
        max_side=1333,
        size_rule="detectron",
        channels="RGB",
        rpn_min_size=0.0,
        selection="class-agnostic",
        nms_thresholds=(0.5, 0.6, 0.7),
        conf_threshold=None,
        attr_softmax="attributes",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown detector preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass
class Prepared:
    """One image ready for the network: (3, h, w) float32 pixels minus the means, the original size,
    and the factors that map network pixels back to original pixels (x, y)."""

    pixels: torch.Tensor
    height: int
    width: int
    scale_x: float
    scale_y: float
    resize_scale: float  # network pixels per original pixel (the Caffe im_scale)

    @property
    def net_size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def resized_size(height: int, width: int, preset: Preset) -> tuple[int, int, float]:
    """(new height, new width, scale) of an image under the preset's resize rule."""
    short, long = min(height, width), max(height, width)
    if preset.size_rule == "caffe":
        scale = preset.short_side / short
        if round(scale * long) > preset.max_side:
            scale = preset.max_side / long
        # cv2.resize(fx=fy=scale) rounds the new size half to even, as Python's round() does.
        return round(height * scale), round(width * scale), scale
    scale = preset.short_side / short
    new_h, new_w = (preset.short_side, scale * width) if height < width else (scale * height, preset.short_side)
    if max(new_h, new_w) > preset.max_side:
        shrink = preset.max_side / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
        scale *= shrink
    return int(new_h + 0.5), int(new_w + 0.5), scale


def preprocess(image: Image.Image, preset: Preset) -> Prepared:
    """Resize (bilinear, half-pixel centres, no antialiasing) and subtract the means, in the preset's
    channel order. Runs on the CPU (in data-loading workers). The ``caffe`` size rule resizes as the
    original's ``cv2.resize(image, None, fx=scale, fy=scale)``; ``detectron`` as the HF port's
    ``F.interpolate(size=...)``."""
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    height, width = rgb.shape[:2]
    new_h, new_w, scale = resized_size(height, width, preset)
    pixels = torch.from_numpy(np.array(rgb, dtype=np.float32))
    if preset.channels == "BGR":
        pixels = pixels.flip(-1)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0)
    if preset.size_rule == "caffe":
        # cv2.resize with a scale factor samples the source at (x + 0.5) / scale - 0.5, not at the size ratio.
        pixels = torch.ops.aten.upsample_bilinear2d(pixels, [new_h, new_w], False, scale, scale)[0]
    else:
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    pixels = pixels - torch.tensor(preset.pixel_mean, dtype=torch.float32).reshape(3, 1, 1)
    if preset.size_rule == "caffe":
        back_x = back_y = 1.0 / scale
    else:  # the demo maps boxes back with original / new size per axis, in float32
        back_y = float(np.float32(height) / np.float32(new_h))
        back_x = float(np.float32(width) / np.float32(new_w))
    return Prepared(pixels.contiguous(), height, width, back_x, back_y, scale)
