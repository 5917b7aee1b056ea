"""Proposal and region-selection rules of both detector presets against restatements written for this test.

``hf-demo`` restates the HF demo port's published post-processing (``find_top_rpn_proposals``, ``do_nms`` and
``_predict_attrs`` in its ``modeling_frcnn.py``): every anchor decoded, the top ``pre_nms`` by objectness, clipped
to the network image, boxes without width or height dropped, NMS, the top ``post_nms``; then each proposal's box
regressed (weights 10, 10, 5, 5) for its best non-background class and clipped, NMS on those boxes at 0.5, then
0.6, then 0.7 until ``min_boxes`` survive (at most ``max_boxes``; the last threshold's result otherwise), the
attributes a softmax over the attribute logits without "no attribute", and the boxes mapped back per axis.
``lxmert`` restates the Caffe proposal layer (sides ``x2 - x1 + 1`` of at least 16 x the resize scale, then the
top ``pre_nms``) and ``generate_tsv.py``'s choice (per-class NMS, best surviving probability, 0.2, min/max).

The inputs are made to land on the rules' edges: tied objectness, sides exactly at the minimum, boxes outside
the image that clip to nothing, the last class winning, thresholds that must be raised. Numpy and plain loops,
sharing nothing with :mod:`features.butd` but the function under test.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from features.butd.model import Detector, DetectorConfig
from features.butd.pipeline import StageTimer, detect, memory_format, postprocess, rpn_proposals, select_per_class
from features.butd.presets import PRESETS, Prepared, Preset, preprocess
from features.butd.weights import random_state_dict

F32 = np.float32
CLAMP = F32(math.log(1000.0 / 16))


# ---- the restatements ------------------------------------------------------------------------------------


def decode(deltas: np.ndarray, boxes: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """(R, 4k) deltas on (R, 4) boxes -> (R, 4k) boxes; widths ``x2 - x1``, dw/dh clamped at log(1000/16)."""
    out = np.zeros(deltas.shape, dtype=F32)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + F32(0.5) * w, boxes[:, 1] + F32(0.5) * h
    for k in range(deltas.shape[1] // 4):
        dx, dy, dw, dh = (deltas[:, 4 * k + i] / F32(weights[i]) for i in range(4))
        px, py = dx * w + cx, dy * h + cy
        pw, ph = np.exp(np.minimum(dw, CLAMP)) * w, np.exp(np.minimum(dh, CLAMP)) * h
        out[:, 4 * k : 4 * k + 4] = np.stack([px - F32(0.5) * pw, py - F32(0.5) * ph,
                                              px + F32(0.5) * pw, py + F32(0.5) * ph], 1)  # fmt: skip
    return out


def clip(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Highest score first (ties: lower index); a box goes when its IoU with a kept one is above thresh."""
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        a = boxes[i]
        for j in keep:
            b = boxes[j]
            inter = max(F32(0), min(a[2], b[2]) - max(a[0], b[0])) * max(F32(0), min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > F32(thresh):
                break
        else:
            keep.append(i)
    return keep


def by_score(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hf_proposals(logits, deltas, anchors, hw, pre: int, post: int, thresh: float) -> tuple[np.ndarray, int]:
    """(proposals, how many top boxes were empty after clipping)."""
    boxes = decode(deltas, anchors, (1, 1, 1, 1))
    top = by_score(logits)[:pre]
    boxes, scores = clip(boxes[top], *hw), logits[top]
    nonempty = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, scores = boxes[nonempty], scores[nonempty]
    return boxes[greedy_nms(boxes, scores, thresh)[:post]], int((~nonempty).sum())


def caffe_proposals(logits, deltas, anchors, hw, min_size: float, pre: int, post: int, thresh: float) -> np.ndarray:
    boxes = clip(decode(deltas, anchors, (1, 1, 1, 1)), *hw)
    ws, hs = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    big = np.where((ws >= min_size) & (hs >= min_size))[0]
    order = big[by_score(logits[big])][:pre]
    return boxes[order][greedy_nms(boxes[order], logits[order], thresh)[:post]]


def best_boxes(cls_logits, box_deltas, proposals, net_hw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """Each proposal's box regressed for its best non-background class and clipped; that probability; the class."""
    probs = softmax(cls_logits)[:, :-1]
    regressed = clip(decode(box_deltas, proposals, (10, 10, 5, 5)).reshape(-1, 4), *net_hw)
    regressed = regressed.reshape(len(proposals), -1, 4)
    classes = probs.argmax(1)
    rows = np.arange(len(probs))
    return regressed[rows, classes], probs[rows, classes], classes


def hf_select(cls_logits, attr_logits, box_deltas, proposals, prepared: Prepared, lo: int, hi: int) -> dict:
    boxes, scores, classes = best_boxes(cls_logits, box_deltas, proposals, prepared.net_size)
    for used in (0.5, 0.6, 0.7):
        keep = greedy_nms(boxes, scores, used)[:hi]
        if len(keep) >= lo:
            break
    attrs = softmax(attr_logits[:, :-1])
    return {"keep": keep, "threshold": used, "boxes": mapped_back(boxes[keep], prepared),
            "candidates": (boxes, scores), "objects_id": classes[keep], "objects_conf": scores[keep],
            "attrs_id": attrs[keep].argmax(1), "attrs_conf": attrs[keep].max(1)}  # fmt: skip


def caffe_select(cls_logits, attr_logits, proposals, prepared: Prepared, lo: int, hi: int) -> dict:
    probs = softmax(cls_logits)[:, :-1]
    max_conf = np.zeros(len(probs), dtype=F32)
    for c in range(probs.shape[1]):
        for i in greedy_nms(proposals, probs[:, c], 0.3):
            max_conf[i] = max(max_conf[i], probs[i, c])
    keep = np.where(max_conf >= 0.2)[0]
    if not lo <= len(keep) <= hi:
        keep = by_score(max_conf)[: lo if len(keep) < lo else hi]
    attrs = softmax(attr_logits)[:, :-1]
    return {"keep": keep, "above": int((max_conf >= 0.2).sum()), "boxes": mapped_back(proposals[keep], prepared),
            "objects_id": probs[keep].argmax(1), "objects_conf": probs[keep].max(1),
            "attrs_id": attrs[keep].argmax(1), "attrs_conf": attrs[keep].max(1)}  # fmt: skip


def mapped_back(boxes: np.ndarray, prepared: Prepared) -> np.ndarray:
    out = boxes * np.array([prepared.scale_x, prepared.scale_y] * 2, dtype=F32)
    return clip(out, prepared.height, prepared.width)


# ---- inputs on the edges ---------------------------------------------------------------------------------


def prepared(net_hw: tuple[int, int], hw: tuple[int, int], scale_x: float, scale_y: float, resize: float) -> Prepared:
    return Prepared(torch.zeros(3, *net_hw), hw[0], hw[1], scale_x, scale_y, resize)


def head_outputs(n: int, seed: int, net_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objectness with many ties (one decimal), small deltas, anchors partly outside the image, and a tenth of
    the anchors pushed entirely past the right or bottom border (empty once clipped)."""
    rng = np.random.default_rng(seed)
    height, width = net_hw
    xy = rng.uniform([-30, -30], [width + 10, height + 10], (n, 2))
    wh = rng.uniform(4, 60, (n, 2))
    anchors = np.concatenate([xy, xy + wh], 1).astype(F32)
    deltas = (rng.normal(0, 0.2, (n, 4))).astype(F32)
    gone = rng.choice(n, n // 10, replace=False)
    deltas[gone[::2], 0] = 40.0
    deltas[gone[1::2], 1] = 40.0
    logits = np.round(rng.normal(0, 1, n), 1).astype(F32)
    return logits, deltas, anchors


def as_tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


# ---- proposals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_hf_demo_proposals_match_the_ports_rules(seed: int) -> None:
    """Catches the top-k taken by the lowest scores or with ties in another order, decoding other boxes,
    clipping to the wrong side, keeping (or dropping the wrong) empty boxes, and the Caffe size filter run."""
    net_hw = (90, 120)
    logits, deltas, anchors = head_outputs(600, seed, net_hw)
    preset = PRESETS["hf-demo"].with_options(rpn_pre_nms=250, rpn_post_nms=70)
    got = rpn_proposals(*as_tensors(logits, deltas, anchors), prepared(net_hw, (45, 60), 0.5, 0.5, 2.0), preset)
    expected, empty = hf_proposals(logits, deltas, anchors, net_hw, 250, 70, preset.rpn_nms)
    assert empty > 0 and len(expected) == 70  # empty boxes among the top 250, and the post-NMS cut used
    top = np.sort(logits)[::-1]
    assert top[249] == top[250]  # a tie at the pre-NMS cut: the lower index must win
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-4)


def test_hf_demo_drops_boxes_empty_in_either_direction_only() -> None:
    """A box with width but no height (or the reverse) is dropped; one with both, however thin, is kept."""
    anchors = np.array([[10, 10, 30, 30], [10, 200, 30, 220], [200, 10, 220, 30], [40, 40, 40.5, 41],
                        [50, 50, 70, 70], [10, 10, 30, 30]], dtype=F32)  # fmt: skip
    deltas = np.zeros((6, 4), dtype=F32)
    logits = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=F32)
    preset = PRESETS["hf-demo"]
    got = rpn_proposals(*as_tensors(logits, deltas, anchors), prepared((100, 120), (100, 120), 1, 1, 1.0), preset)
    # anchors 1 (below the image: no height) and 2 (right of it: no width) clip to nothing; 5 is 0 again
    assert got.tolist() == [[10, 10, 30, 30], [40, 40, 40.5, 41], [50, 50, 70, 70]]


def test_lxmert_proposals_filter_by_size_before_the_top_k() -> None:
    """Sides are ``x2 - x1 + 1`` and must both reach 16 x the resize scale (12 here): a side of exactly 12 stays,
    11.5 goes, in either direction; ties keep index order; the top-k comes after the filter."""
    scale = 0.75
    sides = [(11.0, 20.0), (10.5, 20.0), (20.0, 11.0), (20.0, 10.5), (11.0, 11.0), (10.75, 30.0), (30.0, 11.25)]
    rows = [[5 + 40 * i, 300 + 40 * i, 5 + 40 * i + w, 300 + 40 * i + h] for i, (w, h) in enumerate(sides)]
    logits_edge = np.full(len(rows), 3.0, dtype=F32)  # all tied, above everything else
    logits, deltas, anchors = head_outputs(400, 3, (600, 800))
    anchors = np.concatenate([np.array(rows, dtype=F32), anchors])
    deltas = np.concatenate([np.zeros((len(rows), 4), dtype=F32), deltas])
    logits = np.concatenate([logits_edge, logits])
    preset = PRESETS["lxmert"].with_options(rpn_pre_nms=120, rpn_post_nms=80)
    image = prepared((600, 800), (800, 1067), 1 / scale, 1 / scale, scale)
    got = rpn_proposals(*as_tensors(logits, deltas, anchors), image, preset).numpy()
    expected = caffe_proposals(logits, deltas, anchors, (600, 800), 16 * scale, 120, 80, preset.rpn_nms)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    assert got[:3].tolist() == [rows[0], rows[2], rows[4]]  # sides 12 x 21, 21 x 12, 12 x 12 (x2 - x1 + 1)
    assert len(expected) == 80


# ---- region selection --------------------------------------------------------------------------------------


def network_outputs(
    r: int, classes: int, attrs: int, seed: int, sharp: float, crowded: bool = False
) -> tuple[np.ndarray, ...]:
    """Proposals, class and attribute logits, box deltas and features; ``crowded``: heavily overlapping
    proposals with small deltas, so that fewer survive each NMS threshold."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 30 if crowded else 100, (r, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(30 if crowded else 5, 60, (r, 2))], 1).astype(F32)
    cls_logits = (rng.normal(0, 1, (r, classes + 1)) * sharp).astype(F32)
    cls_logits[: r // 4, classes - 1] += 4 * sharp  # the last object class (before background) often wins
    attr_logits = rng.normal(0, 2, (r, attrs + 1)).astype(F32)
    attr_logits[: r // 3, attrs - 1] += 3.0  # so does the last attribute
    attr_logits[r // 3 : r // 2, attrs] += 6.0  # and "no attribute", which must never be reported
    box_deltas = rng.normal(0, 0.5 if crowded else 2, (r, 4 * classes)).astype(F32)
    features = rng.normal(0, 1, (r, 16)).astype(F32)
    return proposals, cls_logits, attr_logits, box_deltas, features


def check(got, expected: dict, features: np.ndarray) -> None:  # noqa: ANN001
    np.testing.assert_array_equal(got.objects_id.numpy(), expected["objects_id"])
    np.testing.assert_array_equal(got.attrs_id.numpy(), expected["attrs_id"])
    np.testing.assert_allclose(got.objects_conf.numpy(), expected["objects_conf"], rtol=1e-5)
    np.testing.assert_allclose(got.attrs_conf.numpy(), expected["attrs_conf"], rtol=1e-5)
    np.testing.assert_allclose(got.boxes.numpy(), expected["boxes"], rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(got.features.numpy(), features[expected["keep"]])


@pytest.mark.parametrize(
    ("lo", "hi", "threshold"),
    # 12, 25 and 46 survive at 0.5, 0.6, 0.7: exactly min_boxes is enough; the last: too few at 0.7, its result kept
    [(5, 10, 0.5), (12, 20, 0.5), (20, 40, 0.6), (30, 40, 0.7), (60, 100, 0.7)],
)
def test_hf_demo_selection_matches_the_ports_rules(lo: int, hi: int, threshold: float) -> None:
    """Catches the wrong box per proposal (another class's, unclipped, unregressed), a threshold kept although
    too few survive, the max_boxes cut, background or "no attribute" reported, and boxes mapped back wrongly."""
    proposals, cls_logits, attr_logits, box_deltas, features = network_outputs(120, 7, 6, 4, 2.0, crowded=True)
    image = prepared((80, 75), (55, 50), 0.8, 0.78, 1.25)  # not square (x and y clipped apart); clamped at the end
    preset = PRESETS["hf-demo"].with_options(min_boxes=lo, max_boxes=hi)
    got = postprocess(*as_tensors(proposals, features, cls_logits, attr_logits, box_deltas), image, preset)
    expected = hf_select(cls_logits, attr_logits, box_deltas, proposals, image, lo, hi)
    assert expected["threshold"] == threshold
    assert 6 in expected["objects_id"].tolist() and 5 in expected["attrs_id"].tolist()
    boxes, scores = expected["candidates"]
    assert len(expected["keep"]) == min(hi, len(greedy_nms(boxes, scores, threshold)))
    assert (expected["boxes"][:, 2] == 50).any() and (expected["boxes"][:, 3] == 55).any()
    assert (boxes[:, 2] == 75).any() and (boxes[:, 3] == 80).any()  # clipped to the network image first
    check(got, expected, features)



@pytest.mark.parametrize(("lo", "hi", "sharp"), [(10, 100, 3.0), (36, 36, 3.0), (36, 36, 0.5), (5, 8, 3.0)])
def test_lxmert_selection_matches_the_original_loop(lo: int, hi: int, sharp: float) -> None:
    """Per-class NMS 0.3, the best surviving probability, 0.2, min/max boxes; the proposals are the boxes;
    attributes from the softmax over all their logits, "no attribute" never reported."""
    proposals, cls_logits, attr_logits, box_deltas, features = network_outputs(90, 7, 6, 5, sharp)
    image = prepared((150, 170), (110, 130), 0.8, 0.7, 1.25)
    preset = PRESETS["lxmert"].with_options(min_boxes=lo, max_boxes=hi)
    got = postprocess(*as_tensors(proposals, features, cls_logits, attr_logits, box_deltas), image, preset)
    expected = caffe_select(cls_logits, attr_logits, proposals, image, lo, hi)
    assert expected["above"] > 0 and 6 in expected["objects_id"].tolist() and 5 in expected["attrs_id"].tolist()
    check(got, expected, features)


def test_per_class_selection_edges() -> None:
    """A best probability of exactly the confidence threshold counts; exactly max_boxes confident regions are
    kept in proposal order; more than max_boxes gives the top max_boxes (not min_boxes); no threshold keeps all."""
    boxes = torch.tensor([[i * 20.0, 0.0, i * 20.0 + 10, 10.0] for i in range(8)])  # disjoint: NMS drops none
    probs = torch.full((8, 3), 0.01)
    probs[:, 0] = torch.tensor([0.3, 0.2, 0.9, 0.1, 0.5, 0.05, 0.7, 0.15])
    lxmert = PRESETS["lxmert"]
    assert select_per_class(probs, lxmert.with_options(min_boxes=1, max_boxes=5), boxes).tolist() == [0, 1, 2, 4, 6]
    assert select_per_class(probs, lxmert.with_options(min_boxes=1, max_boxes=3), boxes).tolist() == [2, 6, 4]
    assert select_per_class(probs, lxmert.with_options(min_boxes=2, max_boxes=4), boxes).tolist() == [2, 6, 4, 0]
    every = dataclasses.replace(lxmert, conf_threshold=None, min_boxes=1, max_boxes=8)
    assert select_per_class(probs, every, boxes).tolist() == list(range(8))


# ---- the whole detector ------------------------------------------------------------------------------------


SMALL = DetectorConfig(width=8, stem_channels=16, blocks=(1, 1, 2, 1), rpn_hidden=32)


@pytest.fixture(scope="module")
def small_model() -> Detector:
    model = Detector(SMALL)
    model.load_state_dict(random_state_dict(11, SMALL))
    return model.eval()


def pictures(preset_name: str, **options: object) -> tuple[list[Prepared], Preset]:
    """Two noise pictures of one size, prepared at 96 x 128."""
    preset = PRESETS[preset_name].with_options(short_side=96, max_side=128, **options)
    rng = np.random.default_rng(6)
    images = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(2)]
    return [preprocess(image, preset) for image in images], preset


def test_detect_batches_like_alone_and_times_every_stage(small_model: Detector) -> None:
    """Two images in one batch get the regions each gets alone (each its own slice of the rois); the timer
    names every stage; the default is float32 without autocast; mixed sizes are refused by name."""
    batch, preset = pictures("lxmert", min_boxes=5, max_boxes=20)
    cpu = torch.device("cpu")
    timer = StageTimer(enabled=True)
    together = detect(small_model, batch, preset, cpu, roi_chunk=7, timer=timer)
    assert set(timer.seconds) == {"backbone", "rpn", "roi_pool", "res5", "predictor", "select"}
    assert all(v > 0 for v in timer.seconds.values())
    for image, got in zip(batch, together):
        alone = detect(small_model, [image], preset, cpu)[0]
        np.testing.assert_array_equal(got.objects_id.numpy(), alone.objects_id.numpy())
        np.testing.assert_allclose(got.boxes.numpy(), alone.boxes.numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got.features.numpy(), alone.features.numpy(), rtol=1e-4, atol=1e-4)
        exact = detect(small_model, [image], preset, cpu, amp=False, timer=StageTimer())[0]
        assert torch.equal(alone.features, exact.features)
        bf16 = detect(small_model, [image], preset, cpu, amp=True)[0]
        assert bf16.features.dtype == torch.float32 and not torch.equal(bf16.features, exact.features)
    assert not torch.equal(together[0].features, together[1].features)
    other = preprocess(Image.new("RGB", (60, 60)), preset)
    with pytest.raises(ValueError, match=r"^detect\(\) needs images of one network size, got \[\(96, 96\), \(96, 128"):
        detect(small_model, [batch[0], other], preset, cpu)


def test_detect_with_no_proposal_left_gives_no_region(small_model: Detector) -> None:
    """Every proposal under the minimum size: no region, with the right shapes, instead of a crash."""
    batch, preset = pictures("lxmert", min_boxes=5, max_boxes=20)
    preset = dataclasses.replace(preset, rpn_min_size=1000.0)
    got = detect(small_model, batch[:1], preset, torch.device("cpu"))[0]
    assert got.boxes.shape == (0, 4) and got.features.shape == (0, SMALL.feat_dim) and got.objects_id.shape == (0,)


def test_memory_format_follows_the_numerics_choice() -> None:
    assert memory_format(PRESETS["lxmert"].with_options(fast_numerics=True)) == torch.channels_last
    assert memory_format(PRESETS["lxmert"]) == torch.contiguous_format
