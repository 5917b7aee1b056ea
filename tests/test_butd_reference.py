"""The ``lxmert`` detector preset against an independent restatement of the original extraction.

The reference below is written for this test from the original pipeline's published rules (bottom-up-attention's
``_get_image_blob``, its RPN proposal layer and ``tools/generate_tsv.py``), in numpy and plain loops, sharing
nothing with :mod:`features.butd` but the network's layers and weights:

- blob: ``cv2.imread`` order (BGR) as float32, minus the Caffe means, ``cv2.resize(None, fx=s, fy=s,
  INTER_LINEAR)`` with ``s = 600 / short side`` unless ``round(s * long side) > 1000`` (then ``1000 / long``);
- proposals: every anchor of the res4 map decoded, clipped to the blob, those with a side (``x2 - x1 + 1``)
  under ``16 * s`` dropped, the rest ordered by objectness, the top 6000, NMS 0.7, the top 300;
- regions: Caffe's RoIPool (max, 14 x 14, 1/16) of the proposals, the res5 head, then per class c >= 1
  (background is class 0 in Caffe's layout) NMS 0.3 on (proposal, P(c)); each proposal's ``max_conf`` is its
  best P(c) among the classes where it survived; the proposals with ``max_conf >= 0.2`` are kept in their own
  order, or, if fewer than ``MIN_BOXES`` / more than ``MAX_BOXES``, the top ones by ``max_conf``;
- record: the proposals divided by ``s`` (clipped to the image), argmax/max of the object probabilities
  without background, of the attribute probabilities without "no attribute", and the mean res5 features.

The box arithmetic (anchors, deltas, IoU) is that of the released weights' PyTorch port, whose anchors
and regression targets are the ones in the checkpoint: widths ``x2 - x1``, deltas (1, 1, 1, 1), ``dw``
clamped at log(1000 / 16). Stage by stage, each stage of the preset receives the same input as the
reference's and must give the same output (blob within cv2's float rounding; proposals, pooled values,
kept regions, ids and features within float tolerance). Run on ``skimage.data`` photographs with random
weights: the small architecture on several photos, and the released architecture on one full-size photo
(a slow test, part of the full suite that CI runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from features.butd import ops
from features.butd.extractor import ButdExtractor
from features.butd.model import Detector, DetectorConfig
from features.butd.pipeline import postprocess, rpn_proposals
from features.butd.presets import Prepared
from features.butd.weights import random_state_dict

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

PIXEL_MEANS = np.array([[[102.9801, 115.9465, 122.7717]]], dtype=np.float32)  # B, G, R
SMALL = DetectorConfig(width=8, stem_channels=16, blocks=(1, 1, 2, 1), rpn_hidden=32)


@dataclass(frozen=True)
class Settings:
    """The original's settings (``TEST.SCALES``, ``TEST.MAX_SIZE``, RPN and ``generate_tsv.py``)."""

    scale: int = 600
    max_size: int = 1000
    rpn_nms: float = 0.7
    pre_nms: int = 6000
    post_nms: int = 300
    min_size: float = 16.0
    nms: float = 0.3
    conf: float = 0.2
    min_boxes: int = 36
    max_boxes: int = 36


# ---- the reference ----------------------------------------------------------------------------------------


def reference_blob(rgb: np.ndarray, s: Settings) -> tuple[np.ndarray, float]:
    """``_get_image_blob``: (h, w, 3) float32 BGR minus the means, resized by cv2; and the scale."""
    im = rgb[:, :, ::-1].astype(np.float32) - PIXEL_MEANS
    short, long = min(im.shape[:2]), max(im.shape[:2])
    im_scale = float(s.scale) / float(short)
    if np.round(im_scale * long) > s.max_size:
        im_scale = float(s.max_size) / float(long)
    return cv2.resize(im, None, None, fx=im_scale, fy=im_scale, interpolation=cv2.INTER_LINEAR), im_scale


def reference_anchors(cell: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
    """Every cell anchor at every map position, position-major (row, column), anchor-minor."""
    out = np.zeros((height, width, len(cell), 4), dtype=np.float32)
    for y in range(height):
        for x in range(width):
            out[y, x] = cell + np.array([x * stride, y * stride, x * stride, y * stride], dtype=np.float32)
    return out.reshape(-1, 4)


def reference_decode(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    clamp = np.float32(math.log(1000.0 / 16))
    dw, dh = np.minimum(deltas[:, 2], clamp), np.minimum(deltas[:, 3], clamp)
    px, py = deltas[:, 0] * widths + cx, deltas[:, 1] * heights + cy
    pw, ph = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], axis=1).astype(np.float32)


def reference_iou(boxes: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    w = np.maximum(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), np.float32(0))
    h = np.maximum(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), np.float32(0))
    inter = w * h
    return inter / (areas[:, None] + areas[None] - inter)


def reference_nms(iou: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS: best score first (ties: lower index), drop what overlaps a kept box by more than thresh."""
    keep: list[int] = []
    removed = np.zeros(len(scores), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= iou[i] > np.float32(thresh)
    return keep


def reference_proposals(
    logits: np.ndarray, deltas: np.ndarray, cell: np.ndarray, blob_hw: tuple[int, int], im_scale: float, s: Settings
) -> np.ndarray:
    """The RPN proposal layer on raw head outputs: logits (A, H, W), deltas (4A, H, W)."""
    a, height, width = logits.shape
    scores = logits.transpose(1, 2, 0).reshape(-1)  # (H, W, A)
    deltas = deltas.reshape(a, 4, height, width).transpose(2, 3, 0, 1).reshape(-1, 4)
    boxes = reference_decode(reference_anchors(cell, height, width, 16), deltas)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, blob_hw[1])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, blob_hw[0])
    ws, hs = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    big = np.where((ws >= s.min_size * im_scale) & (hs >= s.min_size * im_scale))[0]
    order = big[np.argsort(-scores[big], kind="stable")][: s.pre_nms]
    boxes, scores = boxes[order], scores[order]
    keep = reference_nms(reference_iou(boxes), scores, s.rpn_nms)[: s.post_nms]
    return boxes[keep]


def reference_roi_pool(feat: np.ndarray, rois: np.ndarray, size: int = 14, scale: float = 1 / 16) -> np.ndarray:
    """Caffe's RoIPool: corners rounded half away from zero, bins [floor(p*b), ceil((p+1)*b)), empty bins 0."""
    channels, height, width = feat.shape
    out = np.zeros((len(rois), channels, size, size), dtype=feat.dtype)
    f32 = np.float32

    def rounded(v: float) -> int:
        return int(math.copysign(math.floor(abs(f32(v) * f32(scale)) + 0.5), v))

    for k, (x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = rounded(x1), rounded(y1), rounded(x2), rounded(y2)
        bin_w, bin_h = f32(max(x2 - x1 + 1, 1)) / f32(size), f32(max(y2 - y1 + 1, 1)) / f32(size)
        for ph in range(size):
            hs = min(max(int(math.floor(f32(ph) * bin_h)) + y1, 0), height)
            he = min(max(int(math.ceil(f32(ph + 1) * bin_h)) + y1, 0), height)
            for pw in range(size):
                ws = min(max(int(math.floor(f32(pw) * bin_w)) + x1, 0), width)
                we = min(max(int(math.ceil(f32(pw + 1) * bin_w)) + x1, 0), width)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = feat[:, hs:he, ws:we].max(axis=(1, 2))
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_select(cls_logits: np.ndarray, attr_logits: np.ndarray, rois: np.ndarray, s: Settings) -> dict:
    """``generate_tsv.py``'s choice of regions. The port puts background (and "no attribute") last; Caffe's
    layout has it first, so the logits are moved there before the original loop runs."""
    cls_prob = softmax(np.concatenate([cls_logits[:, -1:], cls_logits[:, :-1]], axis=1))
    attr_prob = softmax(np.concatenate([attr_logits[:, -1:], attr_logits[:, :-1]], axis=1))
    iou = reference_iou(rois)
    max_conf = np.zeros(len(rois), dtype=np.float32)
    for cls_ind in range(1, cls_prob.shape[1]):
        scores = cls_prob[:, cls_ind]
        keep = np.array(reference_nms(iou, scores, s.nms))
        max_conf[keep] = np.where(scores[keep] > max_conf[keep], scores[keep], max_conf[keep])
    keep_boxes = np.where(max_conf >= s.conf)[0]
    if len(keep_boxes) < s.min_boxes:
        keep_boxes = np.argsort(-max_conf, kind="stable")[: s.min_boxes]
    elif len(keep_boxes) > s.max_boxes:
        keep_boxes = np.argsort(-max_conf, kind="stable")[: s.max_boxes]
    objects = cls_prob[keep_boxes][:, 1:]
    attrs = attr_prob[keep_boxes][:, 1:]
    return {
        "keep": keep_boxes,
        "objects_id": objects.argmax(axis=1),
        "objects_conf": objects.max(axis=1),
        "attrs_id": attrs.argmax(axis=1),
        "attrs_conf": attrs.max(axis=1),
        "max_conf": max_conf,
    }


@torch.inference_mode()
def reference_extract(model: Detector, rgb: np.ndarray, s: Settings) -> dict:
    """The whole reference pipeline from an RGB array; the network layers are the model's."""
    blob, im_scale = reference_blob(rgb, s)
    feats = model.backbone(torch.from_numpy(blob).permute(2, 0, 1)[None].contiguous())
    head = model.proposal_generator.rpn_head
    hidden = torch.relu(head.conv(feats))
    logits, deltas = head.objectness_logits(hidden)[0].numpy(), head.anchor_deltas(hidden)[0].numpy()
    cell = model.proposal_generator.anchor_generator.cell_anchors[0].detach().numpy()
    rois = reference_proposals(logits, deltas, cell, blob.shape[:2], im_scale, s)
    pooled = reference_roi_pool(feats[0].numpy(), rois)
    region = model.region_features(torch.from_numpy(pooled))
    cls_logits, attr_logits, _ = model.roi_heads.box_predictor(region)
    out = reference_select(cls_logits.numpy(), attr_logits.numpy(), rois, s)
    boxes = rois[out["keep"]] / im_scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, rgb.shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, rgb.shape[0])
    return {**out, "boxes": boxes, "features": region.numpy()[out["keep"]], "blob": blob, "im_scale": im_scale}


# ---- the comparison ----------------------------------------------------------------------------------------


def photo(name: str, short: int | None = None) -> np.ndarray:
    image = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    if short is not None:
        scale = short / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    return np.asarray(image)


def sharpen(state: dict[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """The same weights with peakier class scores, so that some regions pass the 0.2 confidence."""
    out = dict(state)
    out["roi_heads.box_predictor.cls_score.weight"] = state["roi_heads.box_predictor.cls_score.weight"] * factor
    return out


def compare_stages(model: Detector, extractor: ButdExtractor, rgb: np.ndarray, s: Settings) -> dict:
    """Each stage of the preset fed the reference's input; returns the reference's final output."""
    preset = extractor.preset
    prepared = extractor.preprocess(Image.fromarray(rgb))
    blob, im_scale = reference_blob(rgb, s)
    # 1. the blob: same size and scale, the same pixels up to cv2's float32 source positions
    assert prepared.net_size == blob.shape[:2] and prepared.resize_scale == pytest.approx(im_scale, rel=1e-12)
    np.testing.assert_allclose(prepared.pixels.permute(1, 2, 0).numpy(), blob, rtol=0, atol=0.05)

    same = Prepared(torch.from_numpy(blob).permute(2, 0, 1).contiguous(), rgb.shape[0], rgb.shape[1],
                    1 / im_scale, 1 / im_scale, im_scale)  # fmt: skip
    with torch.inference_mode():
        feats = model.backbone(same.pixels[None])
        logits, deltas = model.proposal_generator.rpn_head(feats)
        anchors = model.proposal_generator.anchor_generator(feats.shape[2], feats.shape[3])
        # 2. proposals from the same head outputs
        proposals = rpn_proposals(logits[0], deltas[0], anchors, same, preset)
        head = model.proposal_generator.rpn_head
        hidden = torch.relu(head.conv(feats))
        cell = model.proposal_generator.anchor_generator.cell_anchors[0].numpy()
        ref_rois = reference_proposals(head.objectness_logits(hidden)[0].numpy(), head.anchor_deltas(hidden)[0].numpy(),
                                       cell, blob.shape[:2], im_scale, s)  # fmt: skip
        assert proposals.shape == ref_rois.shape and len(ref_rois) > s.min_boxes
        np.testing.assert_allclose(proposals.numpy(), ref_rois, rtol=1e-5, atol=1e-3)
        # 3. pooled regions of the same proposals
        rois = torch.cat([torch.zeros(len(proposals), 1), proposals], 1)
        pooled = extractor_pool(feats, rois, model.cfg)
        ref_pooled = reference_roi_pool(feats[0].numpy(), proposals.numpy())
        np.testing.assert_array_equal(pooled.numpy(), ref_pooled)
        region = model.region_features(pooled)
        cls_logits, attr_logits, box_deltas = model.roi_heads.box_predictor(region)
    # 4. the kept regions from the same network outputs
    got = postprocess(proposals, region, cls_logits, attr_logits, box_deltas, same, preset)
    ref = reference_select(cls_logits.numpy(), attr_logits.numpy(), proposals.numpy(), s)
    assert s.min_boxes <= len(ref["keep"]) <= s.max_boxes
    np.testing.assert_array_equal(got.features.numpy(), region.numpy()[ref["keep"]])
    np.testing.assert_array_equal(got.objects_id.numpy(), ref["objects_id"])
    np.testing.assert_array_equal(got.attrs_id.numpy(), ref["attrs_id"])
    np.testing.assert_allclose(got.objects_conf.numpy(), ref["objects_conf"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.attrs_conf.numpy(), ref["attrs_conf"], rtol=1e-4, atol=1e-7)
    boxes = proposals.numpy()[ref["keep"]] / im_scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, rgb.shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, rgb.shape[0])
    np.testing.assert_allclose(got.boxes.numpy(), boxes, rtol=1e-5, atol=1e-3)
    return {**ref, "blob": blob}


def extractor_pool(feats: torch.Tensor, rois: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    return ops.roi_pool(feats, rois, cfg.pooler_resolution, 1.0 / cfg.stride).contiguous()


def compare_end_to_end(extractor: ButdExtractor, model: Detector, rgb: np.ndarray, s: Settings) -> None:
    """The preset from the raw photo against the reference from the raw photo."""
    regions = extractor(Image.fromarray(rgb))
    ref = reference_extract(model, rgb, s)
    np.testing.assert_array_equal(regions.objects_id, ref["objects_id"])
    np.testing.assert_array_equal(regions.attrs_id, ref["attrs_id"])
    np.testing.assert_allclose(regions.boxes, ref["boxes"], rtol=1e-4, atol=0.05)
    np.testing.assert_allclose(regions.features, ref["features"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(regions.objects_conf, ref["objects_conf"], rtol=1e-3, atol=1e-6)


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return random_state_dict(11, SMALL)


def small_setup(state: dict, short: int, max_side: int, lo: int, hi: int) -> tuple[Detector, ButdExtractor, Settings]:
    model = Detector(SMALL)
    model.load_state_dict(state)
    model.eval()
    extractor = ButdExtractor(state, preset="lxmert", config=SMALL, short_side=short, max_side=max_side,
                              min_boxes=lo, max_boxes=hi, rpn_post_nms=120)  # fmt: skip
    return model, extractor, Settings(scale=short, max_size=max_side, post_nms=120, min_boxes=lo, max_boxes=hi)


@pytest.mark.parametrize(
    ("name", "size", "short", "max_side", "lo", "hi", "sharp"),
    [
        ("astronaut", 333, 200, 320, 36, 36, 1.0),  # 512 x 512 -> 333 x 333 -> 200 x 200
        ("coffee", None, 210, 300, 36, 36, 300.0),  # 400 x 600: the long side caps the scale
        ("chelsea", 171, 190, 400, 10, 100, 300.0),  # 10-100 boxes, some above 0.2
        ("rocket", 250, 220, 360, 10, 100, 1.0),  # 10-100 boxes, none above 0.2: the top 10
    ],
)
def test_lxmert_preset_matches_the_reference_stage_by_stage(
    small_state: dict, name: str, size: int | None, short: int, max_side: int, lo: int, hi: int, sharp: float
) -> None:
    """The small architecture (every stage of the full one) at a reduced resize, on real photos."""
    state = sharpen(small_state, sharp)
    model, extractor, s = small_setup(state, short, max_side, lo, hi)
    rgb = photo(name, size)
    ref = compare_stages(model, extractor, rgb, s)
    above = int((ref["max_conf"] >= 0.2).sum())
    if sharp > 1:
        assert above > 0  # the confidence threshold is exercised
    compare_end_to_end(extractor, model, rgb, s)


@pytest.mark.slow
def test_lxmert_preset_matches_the_reference_at_full_size() -> None:
    """The released architecture (ResNet-101, 2048-d) and the released settings (600 / 1000, 300 proposals,
    36 boxes) on a full-size photograph (chelsea, 300 x 451 -> 600 x 902), random weights."""
    state = random_state_dict(2)
    model = Detector()
    model.load_state_dict(state)
    model.eval()
    extractor = ButdExtractor(state, preset="lxmert")
    rgb = photo("chelsea")
    ref = compare_stages(model, extractor, rgb, Settings())
    assert len(ref["keep"]) == 36 and ref["blob"].shape[:2] == (600, 902)
