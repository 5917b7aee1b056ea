"""Box operations of the detector in plain PyTorch: IoU, NMS, per-class NMS, RoIPool, box decoding.

torchvision's compiled ``nms`` and ``roi_pool`` are used when ``torchvision.ops`` imports (``impl="auto"``);
the plain versions compute the same numbers (same float32 arithmetic and the same greedy order), so
results do not depend on whether torchvision is installed. ``impl="torch"`` forces the plain versions.

Conventions: boxes are (x1, y1, x2, y2) with width ``x2 - x1`` (no +1); NMS visits boxes by decreasing
score, ties by increasing index, and drops a box whose IoU with a kept one is greater than the threshold.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import torch

Impl = Literal["auto", "torch", "torchvision"]


@functools.lru_cache(maxsize=1)
def torchvision_ops() -> Any | None:
    """``torch.ops.torchvision`` when torchvision imports and has its compiled kernels, else None."""
    try:
        import torchvision  # noqa: F401

        ops = torch.ops.torchvision
        ops.nms  # noqa: B018 - raises when the compiled library did not load
        return ops
    except Exception:  # a missing or broken (e.g. CUDA-only) build: fall back to plain torch
        return None


def _use_torchvision(impl: Impl) -> bool:
    if impl == "torchvision":
        if torchvision_ops() is None:
            raise RuntimeError("torchvision's compiled ops are not available (torchvision does not import)")
        return True
    return impl == "auto" and torchvision_ops() is not None


# ---- boxes ----------------------------------------------------------------------------------------------


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) intersection over union."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Boxes clamped to [0, width] x [0, height] (a new tensor)."""
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(min=0, max=width)
    out[..., 1::2] = out[..., 1::2].clamp(min=0, max=height)
    return out


def decode_boxes(
    deltas: torch.Tensor,
    boxes: torch.Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = math.log(1000.0 / 16),
) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) deltas (R, 4k) to boxes (R, 4) -> (R, 4k) boxes.

    Centre moves by dx/wx * width, size scales by exp(min(dw/ww, scale_clamp)).
    """
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=scale_clamp)
    dh = (deltas[:, 3::4] / wh).clamp(max=scale_clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.empty_like(deltas)
    out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


# ---- NMS ------------------------------------------------------------------------------------------------


def _score_order(scores: torch.Tensor) -> torch.Tensor:
    return torch.sort(scores, descending=True, stable=True).indices


def _nms_greedy_cpu(boxes: np.ndarray, thresh: float, max_keep: int | None) -> list[int]:
    """Greedy NMS over boxes already sorted by score; each kept box suppresses the later ones."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    n = len(boxes)
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if removed[i]:
            continue
        if max_keep is not None and len(keep) >= max_keep:
            break
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[i + 1 :]) - np.maximum(x1[i], x1[i + 1 :]), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2[i + 1 :]) - np.maximum(y1[i], y1[i + 1 :]), np.float32(0))
        inter = w * h
        removed[i + 1 :] |= inter / (areas[i] + areas[i + 1 :] - inter) > np.float32(thresh)
    return keep


def _nms_fixed_point(sorted_boxes: torch.Tensor, thresh: float) -> torch.Tensor:
    """Greedy NMS as the fixed point of "kept = not overlapped by an earlier kept box", computed with
    matrix products (suits accelerators). The decision of the box at position p depends only on earlier
    positions, so after t rounds the first t decisions are final: the loop ends in at most n rounds."""
    n = len(sorted_boxes)
    over = (box_iou(sorted_boxes, sorted_boxes) > thresh).triu(1).to(torch.float32)
    keep = torch.ones(n, dtype=torch.float32, device=sorted_boxes.device)
    for _ in range(n):
        new = ((keep @ over) == 0).to(torch.float32)
        if torch.equal(new, keep):
            break
        keep = new
    return keep.bool()


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, thresh: float, max_keep: int | None = None, impl: Impl = "auto"
) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, by decreasing score (at most ``max_keep``)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if _use_torchvision(impl):
        keep = torchvision_ops().nms(boxes.float(), scores.float(), float(thresh))
        return keep if max_keep is None else keep[:max_keep]
    order = _score_order(scores)
    sorted_boxes = boxes.float()[order]
    if sorted_boxes.device.type == "cpu":
        kept = _nms_greedy_cpu(sorted_boxes.numpy(), thresh, max_keep)
        return order[torch.as_tensor(kept, dtype=torch.int64)]
    keep = order[_nms_fixed_point(sorted_boxes, thresh)]
    return keep if max_keep is None else keep[:max_keep]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thresh: float, impl: Impl = "auto"
) -> torch.Tensor:
    """NMS within each group (boxes of different groups never suppress each other), by decreasing score.

    Each group is moved to its own region of the plane, so one NMS call handles them all."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    span = float(boxes.max() - boxes.min()) + 1.0
    offsets = (groups.to(boxes.dtype) * span)[:, None]
    return nms(boxes - float(boxes.min()) + offsets, scores, thresh, impl=impl)


def multiclass_nms_mask(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """(R, C) bool: does box r survive greedy NMS among the same R boxes scored by class c's ``scores[:, c]``?

    All classes share the boxes, so one IoU matrix serves them, and greedy NMS runs for every class at
    once: step p visits each class's p-th best box (ties: lower index first), keeps it unless an earlier
    kept box of that class suppressed it, and then lets it suppress its overlaps. Equal to running
    :func:`nms` once per class.
    """
    r, c = scores.shape
    over = box_iou(boxes.float(), boxes.float()) > thresh
    order = torch.sort(scores.t().float(), dim=1, descending=True, stable=True).indices  # (C, R)
    classes = torch.arange(c, device=scores.device)
    suppressed = torch.zeros(c, r, dtype=torch.bool, device=scores.device)
    keep = torch.zeros(c, r, dtype=torch.bool, device=scores.device)
    for p in range(r):
        box = order[:, p]
        alive = ~suppressed[classes, box]
        keep[classes, box] = alive
        suppressed |= over[box] & alive[:, None]
    return keep.t()


# ---- RoIPool --------------------------------------------------------------------------------------------


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's round(): halves go away from zero (torch.round rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_bins(
    rois: torch.Tensor, output_size: int, spatial_scale: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer bin bounds (K, P) ``hstart, hend, wstart, wend`` of RoIPool, as Caffe/torchvision compute them:
    rounded roi corners on the map, roi size ``end - start + 1`` (at least 1), bin ``p`` spanning
    ``[floor(p * size / P), ceil((p + 1) * size / P))`` from the roi start, clamped to the map."""
    scaled = _round_half_away(rois[:, 1:5].float() * torch.tensor(spatial_scale, dtype=torch.float32))
    x1, y1, x2, y2 = scaled.to(torch.int64).unbind(1)
    roi_w = torch.clamp(x2 - x1 + 1, min=1).to(torch.float32)
    roi_h = torch.clamp(y2 - y1 + 1, min=1).to(torch.float32)
    p = torch.arange(output_size, dtype=torch.float32, device=rois.device)
    bin_w = (roi_w / output_size)[:, None]
    bin_h = (roi_h / output_size)[:, None]
    hstart = (torch.floor(p * bin_h).to(torch.int64) + y1[:, None]).clamp(0, height)
    hend = (torch.ceil((p + 1) * bin_h).to(torch.int64) + y1[:, None]).clamp(0, height)
    wstart = (torch.floor(p * bin_w).to(torch.int64) + x1[:, None]).clamp(0, width)
    wend = (torch.ceil((p + 1) * bin_w).to(torch.int64) + x1[:, None]).clamp(0, width)
    return hstart, hend, wstart, wend


def _shifted_max(src: torch.Tensor, dim: int, step: int, out: torch.Tensor) -> None:
    """out[i] = max(src[i], src[i + step]) along ``dim`` (src[i] itself where i + step runs off the end)."""
    n = src.shape[dim]  # step < n: a table level exists only where a bin is at least 2 * step cells long
    torch.maximum(src.narrow(dim, 0, n - step), src.narrow(dim, step, n - step), out=out.narrow(dim, 0, n - step))
    out.narrow(dim, n - step, step).copy_(src.narrow(dim, n - step, step))


def _pool_one_image(hwc: torch.Tensor, rois: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """RoIPool of the rois of one (H, W, C) map -> (K, P, P, C).

    A range-maximum table holds, for every power-of-two height 2**a and width 2**b, the maximum of the
    2**a x 2**b window starting at each cell; a bin of h x w cells is then the maximum of four
    (overlapping) windows of height 2**floor(log2 h) and width 2**floor(log2 w). Four gathers replace
    a loop over the boxes.
    """
    height, width, channels = hwc.shape
    hs, he, ws, we = roi_bins(rois, size, scale, height, width)
    bin_h, bin_w = (he - hs).clamp(min=1), (we - ws).clamp(min=1)
    level_h = torch.floor(torch.log2(bin_h.to(torch.float32))).to(torch.int64)
    level_w = torch.floor(torch.log2(bin_w.to(torch.float32))).to(torch.int64)
    levels_h, levels_w = int(level_h.max()) + 1, int(level_w.max()) + 1
    tables = torch.empty((levels_h, levels_w, height, width, channels), dtype=hwc.dtype, device=hwc.device)
    tables[0, 0] = hwc
    for a in range(1, levels_h):
        _shifted_max(tables[a - 1, 0], 0, 2 ** (a - 1), tables[a, 0])
    for a in range(levels_h):
        for b in range(1, levels_w):
            _shifted_max(tables[a, b - 1], 1, 2 ** (b - 1), tables[a, b])
    flat = tables.reshape(-1, channels)  # (levels_h * levels_w * H * W, C)
    table = (level_h[:, :, None] * levels_w + level_w[:, None, :]) * (height * width)  # (K, P, P)
    y_lo = hs.clamp(max=height - 1)
    y_hi = (he - 2**level_h).clamp(min=0, max=height - 1)
    x_lo = ws.clamp(max=width - 1)
    x_hi = (we - 2**level_w).clamp(min=0, max=width - 1)
    out = None
    for ys in (y_lo, y_hi):
        for xs in (x_lo, x_hi):
            index = table + ys[:, :, None] * width + xs[:, None, :]
            part = flat.index_select(0, index.reshape(-1))
            out = part if out is None else torch.maximum(out, part, out=out)
    out = out.reshape(len(rois), size, size, channels)
    empty = (he <= hs)[:, :, None] | (we <= ws)[:, None, :]
    return out.masked_fill_(empty[..., None], 0) if bool(empty.any()) else out


def roi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Max RoIPool: (N, C, H, W) map and (K, 5) rois ``batch_index, x1, y1, x2, y2`` (image pixels)
    -> (K, C, P, P); an empty bin gives 0. The plain version returns a channels-last tensor."""
    if _use_torchvision(impl):
        out, _ = torchvision_ops().roi_pool(features, rois.to(features.dtype), spatial_scale, output_size, output_size)
        return out
    hwc = features.permute(0, 2, 3, 1)
    out = torch.empty(
        (len(rois), output_size, output_size, features.shape[1]), dtype=features.dtype, device=features.device
    )
    image_of = rois[:, 0].to(torch.int64)
    for n in range(features.shape[0]):  # one range-maximum table per image
        idx = torch.nonzero(image_of == n)[:, 0]
        if len(idx):
            out[idx] = _pool_one_image(hwc[n].contiguous(), rois[idx], output_size, spatial_scale)
    return out.permute(0, 3, 1, 2)
