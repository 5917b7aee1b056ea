"""Box operations and selection rules of the detector against brute-force versions and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from features.butd import ops
from features.butd.pipeline import select_class_agnostic, select_per_class
from features.butd.presets import PRESETS, resized_size

HAS_TV = ops.torchvision_ops() is not None


# ---- brute-force references -------------------------------------------------------------------------------


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def brute_nms(boxes, scores, thresh) -> list[int]:
    """Textbook greedy NMS: highest score first (ties: lower index), drop IoU > thresh."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[j]) <= thresh for j in keep):
            keep.append(i)
    return keep


def brute_roi_pool(feat: torch.Tensor, rois: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """Caffe's RoIPool loop: rounded corners, bins [floor(p*b), ceil((p+1)*b)), empty bins 0."""
    _, c, h, w = feat.shape
    out = torch.zeros(len(rois), c, size, size, dtype=feat.dtype)
    f32 = np.float32
    for k, r in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (int(math.copysign(math.floor(abs(f32(v) * f32(scale)) + 0.5), v)) for v in r[1:])
        bin_w, bin_h = f32(max(x2 - x1 + 1, 1)) / f32(size), f32(max(y2 - y1 + 1, 1)) / f32(size)
        for ph in range(size):
            hs = min(max(int(math.floor(f32(ph) * bin_h)) + y1, 0), h)
            he = min(max(int(math.ceil(f32(ph + 1) * bin_h)) + y1, 0), h)
            for pw in range(size):
                ws = min(max(int(math.floor(f32(pw) * bin_w)) + x1, 0), w)
                we = min(max(int(math.ceil(f32(pw + 1) * bin_w)) + x1, 0), w)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = feat[int(r[0]), :, hs:he, ws:we].amax(dim=(1, 2))
    return out


def random_boxes(n: int, seed: int, extent: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent / 2 + 1
    return torch.cat([xy, xy + wh], 1)


# ---- NMS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force(seed: int) -> None:
    boxes = random_boxes(120, seed)
    scores = torch.rand(120, generator=torch.Generator().manual_seed(seed + 10))
    scores[::7] = scores[3]  # ties: the lower index goes first
    for thresh in (0.3, 0.5, 0.7):
        expected = brute_nms(boxes.tolist(), scores.tolist(), thresh)
        assert ops.nms(boxes, scores, thresh, impl="torch").tolist() == expected
        order = torch.sort(scores, descending=True, stable=True).indices
        fixed = order[ops._nms_fixed_point(boxes[order], thresh)]  # the accelerator path, run on the CPU
        assert fixed.tolist() == expected
        assert ops.nms(boxes, scores, thresh, max_keep=5, impl="torch").tolist() == expected[:5]


def test_nms_hand_made_cases() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.9])
    # box 1 overlaps box 0 with IoU 9/11 > 0.5; box 3 is box 0 again with the same score (a tie: index 0 wins)
    assert ops.nms(boxes, scores, 0.5, impl="torch").tolist() == [0, 2]
    assert ops.nms(boxes, scores, 0.85, impl="torch").tolist() == [0, 1, 2]  # 9/11 is not > 0.85
    assert ops.nms(boxes[:0], scores[:0], 0.5, impl="torch").tolist() == []
    half = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5.0]])  # IoU exactly 0.5: not above 0.5, both stay
    assert ops.nms(half, torch.tensor([0.9, 0.8]), 0.5, impl="torch").tolist() == [0, 1]
    assert ops.nms(half, torch.tensor([0.9, 0.8]), 0.49, impl="torch").tolist() == [0]


def test_batched_nms_keeps_groups_apart() -> None:
    boxes = random_boxes(60, 4)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(5))
    groups = torch.arange(60) % 3
    got = ops.batched_nms(boxes, scores, groups, 0.4, impl="torch").tolist()
    expected = []
    for g in range(3):
        idx = [i for i in range(60) if groups[i] == g]
        expected += [idx[j] for j in brute_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.4)]
    assert sorted(got) == sorted(expected)
    assert got == sorted(got, key=lambda i: -float(scores[i]))


def test_multiclass_nms_mask_is_nms_per_class() -> None:
    boxes = random_boxes(50, 6)
    scores = torch.rand(50, 9, generator=torch.Generator().manual_seed(7))
    scores[:, 4] = 0.5  # a class where every box ties
    mask = ops.multiclass_nms_mask(boxes, scores, 0.3)
    for c in range(9):
        expected = set(brute_nms(boxes.tolist(), scores[:, c].tolist(), 0.3))
        assert set(torch.nonzero(mask[:, c])[:, 0].tolist()) == expected


@pytest.mark.skipif(not HAS_TV, reason="torchvision does not import here (tests/test_butd_torchvision.py loads it)")
def test_torchvision_and_plain_versions_agree() -> None:
    """The compiled kernels (used whenever torchvision imports) and the plain versions give the same
    indices and the same pooled values, including the edge cases of :func:`test_roi_pool_matches_brute_force`."""
    import torchvision

    for seed, extent in ((8, 600.0), (15, 60.0)):  # sparse and crowded boxes
        boxes = random_boxes(300, seed, extent=extent)
        scores = torch.rand(300, generator=torch.Generator().manual_seed(seed + 1))
        groups = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(seed + 2))
        for thresh in (0.3, 0.5, 0.7):
            plain = ops.nms(boxes, scores, thresh, impl="torch").tolist()
            assert plain == ops.nms(boxes, scores, thresh, impl="torchvision").tolist()
            assert plain == torchvision.ops.nms(boxes, scores, thresh).tolist()
            assert ops.nms(boxes, scores, thresh, max_keep=7, impl="torchvision").tolist() == plain[:7]
            grouped = ops.batched_nms(boxes, scores, groups, thresh, impl="torch").tolist()
            assert grouped == ops.batched_nms(boxes, scores, groups, thresh, impl="torchvision").tolist()
            assert grouped == torchvision.ops.batched_nms(boxes, scores, groups, thresh).tolist()
    feat = torch.randn(2, 16, 38, 50, generator=torch.Generator().manual_seed(10))
    boxes = random_boxes(300, 8, extent=600)
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=torch.Generator().manual_seed(11)).float(), boxes], 1)
    edge = torch.tensor([[0, 0, 0, 50 * 16 - 1, 38 * 16 - 1], [1, 8, 8, 24, 24], [0, -40, -40, 30, 20],
                         [1, 700, 500, 900, 700], [0, 100, 100, 100, 100], [0, 1000, 1000, 1100, 1100]])  # fmt: skip
    rois = torch.cat([rois, edge])
    for size, scale in ((14, 1 / 16), (7, 1 / 16), (5, 1 / 8)):
        plain = ops.roi_pool(feat, rois, size, scale, impl="torch")
        assert torch.equal(plain, ops.roi_pool(feat, rois, size, scale, impl="torchvision"))
        assert torch.equal(plain, torchvision.ops.roi_pool(feat, rois, size, scale))
        last = feat.contiguous(memory_format=torch.channels_last)
        assert torch.equal(plain, ops.roi_pool(last, rois, size, scale, impl="torchvision"))


# ---- RoIPool and boxes ---------------------------------------------------------------------------------------


def test_roi_pool_matches_brute_force() -> None:
    feat = torch.randn(2, 5, 21, 27, generator=torch.Generator().manual_seed(11))
    rois = torch.tensor(
        [
            [0, 0, 0, 27 * 16 - 1, 21 * 16 - 1],  # the whole map
            [1, 8, 8, 24, 24],  # .5 corners: C rounds halves away from zero
            [0, -40, -40, 30, 20],  # starts outside the image
            [1, 400, 300, 900, 700],  # mostly beyond the right/bottom border: empty bins
            [0, 100, 100, 100, 100],  # a point
            [1, 50.3, 10.7, 200.2, 330.9],
            [0, 1000, 1000, 1100, 1100],  # entirely outside: all zeros
        ]
    )
    rois = torch.cat([rois, torch.cat([torch.randint(0, 2, (30, 1)).float(), random_boxes(30, 12, 400)], 1)])
    expected = brute_roi_pool(feat, rois, 7, 1 / 16)
    got = ops.roi_pool(feat, rois, 7, 1 / 16, impl="torch")
    assert torch.equal(got, expected)
    assert float(got[6].abs().sum()) == 0.0
    assert torch.equal(
        ops.roi_pool(feat.contiguous(memory_format=torch.channels_last), rois, 7, 1 / 16, impl="torch"), got
    )


def test_box_decoding() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size 20 x 40
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, -0.5, math.log(2), 0.0, 0.0, 0.0, 100.0, 0.0]])
    out = ops.decode_boxes(deltas, boxes, (1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(1000 / 16))
    assert out[0, :4].tolist() == [10.0, 20.0, 30.0, 60.0]
    assert out[0, 4:8].tolist() == pytest.approx([20.0, 0.0, 60.0, 40.0])  # centre +20/-20, width x2
    assert out[0, 10] - out[0, 8] == pytest.approx(20 * 1000 / 16)  # dw clamped
    weighted = ops.decode_boxes(torch.tensor([[10.0, 10.0, 5.0 * math.log(2), 0.0]]), boxes, (10, 10, 5, 5))
    assert weighted[0].tolist() == pytest.approx([20.0, 60.0, 60.0, 100.0])  # dx = dy = 1: one box size over
    clipped = ops.clip_boxes(torch.tensor([[-5.0, 3.0, 700.0, 900.0]]), 480, 640)
    assert clipped.tolist() == [[0.0, 3.0, 640.0, 480.0]]


# ---- selection rules ---------------------------------------------------------------------------------------


def brute_max_conf(probs: np.ndarray, boxes: np.ndarray, thresh: float) -> np.ndarray:
    """Each proposal's best probability over the classes where it survives that class's NMS."""
    max_conf = np.zeros(len(boxes))
    for c in range(probs.shape[1]):
        for i in brute_nms(boxes.tolist(), probs[:, c].tolist(), thresh):
            max_conf[i] = max(max_conf[i], probs[i, c])
    return max_conf


def brute_per_class(probs: np.ndarray, boxes: np.ndarray, thresh: float, conf: float, lo: int, hi: int) -> list[int]:
    """The original extraction script's loop (stable ordering for ties)."""
    max_conf = brute_max_conf(probs, boxes, thresh)
    keep = np.where(max_conf >= conf)[0]
    ranked = sorted(range(len(boxes)), key=lambda i: (-max_conf[i], i))
    if len(keep) < lo:
        return ranked[:lo]
    if len(keep) > hi:
        return ranked[:hi]
    return keep.tolist()


def make_probs(n: int, classes: int, seed: int, sharp: float) -> torch.Tensor:
    logits = torch.randn(n, classes + 1, generator=torch.Generator().manual_seed(seed)) * sharp
    return torch.softmax(logits, -1)[:, :-1]


@pytest.mark.parametrize(
    ("n", "sharp", "lo", "hi", "above", "case"),
    [
        (80, 4.0, 36, 36, range(37, 81), "many above 0.2: the top 36 by confidence"),
        (80, 0.5, 36, 36, range(0, 36), "fewer than 36 above 0.2: still the top 36"),
        (20, 4.0, 36, 36, range(0, 21), "fewer proposals than 36: all of them"),
        (80, 2.2, 10, 100, range(10, 101), "10-100 within range: proposal order"),
        (80, 0.5, 10, 100, range(0, 10), "10-100 below: top 10"),
    ],
)
def test_per_class_selection_matches_the_original_loop(
    n: int, sharp: float, lo: int, hi: int, above: range, case: str
) -> None:
    boxes = random_boxes(n, 13)
    probs = make_probs(n, 12, 14, sharp)
    preset = PRESETS["lxmert"].with_options(min_boxes=lo, max_boxes=hi)
    got = select_per_class(probs, preset, boxes).tolist()
    expected = brute_per_class(probs.numpy(), boxes.numpy(), 0.3, 0.2, lo, hi)
    assert got == expected, case
    confident = int((brute_max_conf(probs.numpy(), boxes.numpy(), 0.3) >= 0.2).sum())
    assert confident in above, case  # the case is the one its name says
    count = min(n, lo) if confident < lo else min(confident, hi)  # the count rule, from the loop's own numbers
    assert len(got) == count, case
    if lo <= confident <= hi:
        assert got == sorted(got), case  # in range: proposal order
    else:
        scores = brute_max_conf(probs.numpy(), boxes.numpy(), 0.3)[got]
        assert (np.diff(scores) <= 0).all(), case  # out of range: by decreasing confidence


def test_per_class_selection_in_range_keeps_proposal_order() -> None:
    # 12 disjoint boxes, each the clear winner of its own class -> all survive with conf 0.9 (>= 0.2)
    boxes = torch.tensor([[i * 20.0, 0.0, i * 20.0 + 10, 10.0] for i in range(12)])
    probs = torch.full((12, 12), 0.005)
    probs[torch.arange(12), torch.arange(12)] = 0.9
    probs[3, 3] = 0.95
    preset = PRESETS["lxmert"].with_options(min_boxes=10, max_boxes=100)
    assert select_per_class(probs, preset, boxes).tolist() == list(range(12))
    preset = PRESETS["lxmert"].with_options(min_boxes=5, max_boxes=5)
    assert select_per_class(probs, preset, boxes).tolist() == [3, 0, 1, 2, 4]


def test_class_agnostic_selection_raises_the_threshold_until_enough_survive() -> None:
    # a cluster of 40 heavily overlapping boxes plus 20 separate ones
    cluster = torch.tensor([[0.0, 0.0, 100.0 + i, 100.0] for i in range(40)])
    apart = torch.tensor([[200.0 + 20 * i, 0.0, 210.0 + 20 * i, 10.0] for i in range(20)])
    boxes = torch.cat([cluster, apart])
    scores = torch.linspace(1.0, 0.1, 60)
    preset = PRESETS["hf-demo"].with_options(min_boxes=21, max_boxes=36)
    keep = select_class_agnostic(scores, boxes, preset)
    assert keep.tolist() == [0] + list(range(40, 60))  # 0.5 already leaves 21
    for lo in (36, 25):
        preset = PRESETS["hf-demo"].with_options(min_boxes=lo, max_boxes=36)
        keep = select_class_agnostic(scores, boxes, preset).tolist()
        for t in (0.5, 0.6, 0.7):
            expected = brute_nms(boxes.tolist(), scores.tolist(), t)[:36]
            if len(expected) >= lo:
                break
        assert keep == expected  # 0.7 still leaves fewer than 36: the last threshold's result


def test_resize_rules() -> None:
    lx, hf = PRESETS["lxmert"], PRESETS["hf-demo"]
    assert resized_size(480, 640, lx)[:2] == (600, 800)
    assert resized_size(200, 1000, lx)[:2] == (200, 1000)  # long side capped at 1000
    assert resized_size(480, 640, hf)[:2] == (800, 1067)
    assert resized_size(500, 1500, hf)[:2] == (444, 1333)
    assert resized_size(512, 512, hf)[:2] == (800, 800)


# ---- edges found by mutation testing ------------------------------------------------------------------------


def test_nms_edges_on_both_paths() -> None:
    """Boxes apart in one direction have no overlap at any threshold; one box is kept; an empty input gives an
    empty int64 index; the IoU boundary holds on the accelerator path (run here on the CPU) too."""
    apart = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 30.0], [20.0, 0.0, 30.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.nms(apart, scores, 0.001, impl="torch").tolist() == [0, 1, 2]
    assert ops.nms(apart[:1], scores[:1], 0.5, impl="torch").tolist() == [0]
    empty = ops.nms(apart[:0], scores[:0], 0.5, impl="torch")
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    half = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    assert ops._nms_fixed_point(half, 0.5).tolist() == [True, True]
    assert ops._nms_fixed_point(half, 0.49).tolist() == [True, False]
    kept = ops.nms(apart, scores, 0.5, impl="torch")
    assert kept.dtype == torch.int64


def test_batched_nms_groups_never_touch() -> None:
    """Identical boxes in different groups survive even at a tiny threshold, with negative coordinates too; a
    single box and no box are handled."""
    for box in ([0.0, 0.0, 10.0, 10.0], [-10.0, -10.0, 0.0, 0.0], [-30.0, 5.0, -2.0, 9.0]):
        boxes = torch.tensor([box, box, box])
        kept = ops.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 1]), 0.001, impl="torch")
        assert kept.tolist() == [0, 1], box
    one = ops.batched_nms(torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0.3]), torch.tensor([4]), 0.5)
    assert one.tolist() == [0]
    none = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert none.tolist() == [] and none.dtype == torch.int64


def test_clip_and_decode_every_coordinate() -> None:
    clipped = ops.clip_boxes(torch.tensor([[-5.0, 3.0, 700.0, 100.0], [10.0, -3.0, 20.0, 500.0]]), 480, 640)
    assert clipped.tolist() == [[0.0, 3.0, 640.0, 100.0], [10.0, 0.0, 20.0, 480.0]]
    gen = torch.Generator().manual_seed(3)
    boxes = torch.rand(6, 2, generator=gen) * 50
    boxes = torch.cat([boxes, boxes + 5 + torch.rand(6, 2, generator=gen) * 30], 1)
    deltas = torch.randn(6, 5 * 4, generator=gen)
    weights = (10.0, 10.0, 5.0, 5.0)
    got = ops.decode_boxes(deltas, boxes, weights)
    for r in range(6):
        x1, y1, x2, y2 = boxes[r].tolist()
        w, h = x2 - x1, y2 - y1
        for k in range(5):
            dx, dy, dw, dh = (deltas[r, 4 * k + i].item() / weights[i] for i in range(4))
            dw, dh = min(dw, math.log(1000 / 16)), min(dh, math.log(1000 / 16))
            cx, cy = x1 + 0.5 * w + dx * w, y1 + 0.5 * h + dy * h
            pw, ph = math.exp(dw) * w, math.exp(dh) * h
            expected = [cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2]
            assert got[r, 4 * k : 4 * k + 4].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-4), (r, k)


# ---- which implementation runs --------------------------------------------------------------------------------


class CompiledStandIn:
    """Stands in for ``torch.ops.torchvision``: records each call and answers with the brute-force versions, so
    the dispatch (arguments, their order and dtype, ``max_keep``) is checked where torchvision does not import."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def nms(self, boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
        self.calls.append(("nms", (boxes, scores, thresh)))
        assert boxes.dtype == scores.dtype == torch.float32 and type(thresh) is float
        return torch.tensor(brute_nms(boxes.tolist(), scores.tolist(), thresh), dtype=torch.int64)

    def roi_pool(self, features, rois, scale, height, width):  # noqa: ANN001, ANN201
        self.calls.append(("roi_pool", (features, rois, scale, height, width)))
        assert rois.dtype == features.dtype and height == width
        return brute_roi_pool(features, rois, height, scale), None


def test_auto_uses_the_compiled_kernels_when_they_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """``impl="auto"`` (the default everywhere) hands nms, batched_nms and roi_pool to torchvision's kernels with
    the right arguments; ``impl="torch"`` never does; ``impl="torchvision"`` without them is a clear error."""
    compiled = CompiledStandIn()
    monkeypatch.setattr(ops, "torchvision_ops", lambda: compiled)
    boxes, scores = random_boxes(40, 21), torch.rand(40, generator=torch.Generator().manual_seed(22))
    expected = brute_nms(boxes.tolist(), scores.tolist(), 0.4)
    assert ops.nms(boxes.double(), scores.double(), 0.4).tolist() == expected
    assert [name for name, _ in compiled.calls] == ["nms"]
    got_boxes, got_scores, got_thresh = compiled.calls[0][1]
    assert torch.equal(got_boxes, boxes) and torch.equal(got_scores, scores) and got_thresh == 0.4
    assert ops.nms(boxes, scores, 0.4, max_keep=3).tolist() == expected[:3]
    assert ops.nms(boxes, scores, 0.4, max_keep=3, impl="torchvision").tolist() == expected[:3]
    groups = torch.arange(40) % 4
    assert ops.batched_nms(boxes, scores, groups, 0.4).tolist() == ops.batched_nms(
        boxes, scores, groups, 0.4, impl="torch"
    ).tolist()
    assert len(compiled.calls) == 4  # the plain batched_nms above did not call it
    feat = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(23)).double()
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 90.0], [1, 0.0, 0.0, 150.0, 120.0]])
    pooled = ops.roi_pool(feat, rois, 4, 1 / 16)
    name, (got_feat, got_rois, scale, height, width) = compiled.calls[-1]
    assert name == "roi_pool" and got_feat is feat and torch.equal(got_rois, rois.double())
    assert (scale, height, width) == (1 / 16, 4, 4)
    assert torch.equal(pooled, brute_roi_pool(feat, rois, 4, 1 / 16))
    calls = len(compiled.calls)
    ops.nms(boxes, scores, 0.4, impl="torch")
    ops.roi_pool(feat, rois, 4, 1 / 16, impl="torch")
    assert len(compiled.calls) == calls
    monkeypatch.setattr(ops, "torchvision_ops", lambda: None)
    with pytest.raises(RuntimeError, match=r"^torchvision's compiled ops are not available \(torchvision does not"):
        ops.nms(boxes, scores, 0.4, impl="torchvision")
    assert ops.nms(boxes, scores, 0.4).tolist() == expected  # auto without them: the plain version


def test_cpu_nms_is_the_greedy_loop_and_max_keep_zero_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU the greedy loop runs (the matrix fixed point is for accelerators: O(n^3) here), and ``max_keep``
    means the same on every path, 0 included."""

    def fixed_point(*_args: object) -> torch.Tensor:
        raise AssertionError("the accelerator version ran on the CPU")

    monkeypatch.setattr(ops, "_nms_fixed_point", fixed_point)
    boxes, scores = random_boxes(30, 24), torch.rand(30, generator=torch.Generator().manual_seed(25))
    expected = brute_nms(boxes.tolist(), scores.tolist(), 0.5)
    assert ops.nms(boxes, scores, 0.5, impl="torch").tolist() == expected
    for k in (0, 1, 4):
        kept = ops.nms(boxes, scores, 0.5, max_keep=k, impl="torch")
        assert kept.tolist() == expected[:k] and kept.dtype == torch.int64


def test_roi_bins_stay_on_the_map() -> None:
    """Bin bounds are clamped to [0, height] x [0, width] for rois above, below, left and right of the map."""
    rois = torch.tensor([[0, -90.0, -80, -20, -10], [0, 200.0, 300, 260, 390], [0, -50.0, 10, 400, 30]])
    hs, he, ws, we = ops.roi_bins(rois, 3, 1 / 4, height=12, width=16)
    for bound, top in ((hs, 12), (he, 12), (ws, 16), (we, 16)):
        assert int(bound.min()) >= 0 and int(bound.max()) <= top
    assert hs[0].tolist() == he[0].tolist() == [0, 0, 0] and ws[1].tolist() == we[1].tolist() == [16, 16, 16]


def test_roi_pool_every_small_roi_in_double_precision() -> None:
    """Every integer roi around a small map (inside, across each border, outside), alone and all together, equals
    Caffe's loop exactly; float64 maps stay float64; more images than channels; bins of one cell at the last
    row and column."""
    feat = torch.randn(3, 2, 5, 6, generator=torch.Generator().manual_seed(26), dtype=torch.float64)
    spans = [(a, b) for a in range(-2, 9) for b in range(a, 9)]
    rois = torch.tensor([[float(i % 3), x1, y1, x2, y2] for i, ((x1, x2), (y1, y2)) in
                         enumerate((x, y) for x in spans for y in spans[::3])], dtype=torch.float64)  # fmt: skip
    for size in (2, 3):
        got = ops.roi_pool(feat, rois, size, 1.0, impl="torch")
        assert got.dtype == torch.float64
        assert torch.equal(got, brute_roi_pool(feat, rois, size, 1.0))
    for roi in ([0, 8, 1, 9, 2], [1, 1, 6, 2, 7], [2, 4, 3, 5, 4], [2, 7, 7, 8, 8], [0, 5, 0, 5, 4]):
        one = torch.tensor([roi], dtype=torch.float64)
        assert torch.equal(ops.roi_pool(feat, one, 2, 1.0, impl="torch"), brute_roi_pool(feat, one, 2, 1.0)), roi
