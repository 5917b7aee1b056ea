"""From preprocessed images to selected regions: RPN proposals, pooled res5 features, class and attribute
predictions, and the preset's choice of boxes (see :mod:`features.butd.presets`)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from features.butd import ops
from features.butd.model import Detector
from features.butd.presets import Prepared, Preset

BOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@dataclass
class Detections:
    """Selected regions of one image, boxes in original-image pixels (CPU tensors)."""

    boxes: torch.Tensor  # (N, 4) float32
    features: torch.Tensor  # (N, D) float32
    objects_id: torch.Tensor  # (N,) int64, 0..num_classes-1
    objects_conf: torch.Tensor  # (N,) float32
    attrs_id: torch.Tensor  # (N,) int64, 0..num_attrs-1
    attrs_conf: torch.Tensor  # (N,) float32


@dataclass
class StageTimer:
    """Wall-clock seconds per named stage (synchronising the device before each reading)."""

    enabled: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextlib.contextmanager
    def __call__(self, name: str, device: torch.device):
        if not self.enabled:
            yield
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds[name] += time.perf_counter() - start


def rpn_proposals(
    logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, prepared: Prepared, preset: Preset
) -> torch.Tensor:
    """(<= rpn_post_nms, 4) proposals of one image in network pixels, by decreasing objectness."""
    logits, deltas = logits.float(), deltas.float()
    height, width = prepared.net_size
    if preset.rpn_min_size > 0:
        # Original order: decode every anchor, clip, drop small boxes, then take the top scores.
        boxes = ops.clip_boxes(ops.decode_boxes(deltas, anchors), height, width)
        ws = boxes[:, 2] - boxes[:, 0] + 1
        hs = boxes[:, 3] - boxes[:, 1] + 1
        min_size = preset.rpn_min_size * prepared.resize_scale
        big = torch.nonzero((ws >= min_size) & (hs >= min_size))[:, 0]
        top = big[torch.sort(logits[big], descending=True, stable=True).indices[: preset.rpn_pre_nms]]
        boxes, scores = boxes[top], logits[top]
    else:
        top = torch.sort(logits, descending=True, stable=True).indices[: preset.rpn_pre_nms]
        boxes = ops.clip_boxes(ops.decode_boxes(deltas[top], anchors[top]), height, width)
        scores = logits[top]
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = boxes[nonempty], scores[nonempty]
    keep = ops.nms(boxes, scores, preset.rpn_nms, max_keep=preset.rpn_post_nms)
    return boxes[keep]


def select_per_class(probs: torch.Tensor, preset: Preset, boxes: torch.Tensor) -> torch.Tensor:
    """Indices of the kept proposals under the original rule: per-class NMS, best surviving score,
    threshold, then min/max counts (in proposal order when the count is already in range, else by
    decreasing score, ties by index)."""
    survive = ops.multiclass_nms_mask(boxes, probs, preset.nms_thresholds[0])
    max_conf = (probs * survive).amax(dim=1)
    keep = torch.nonzero(max_conf >= (preset.conf_threshold or 0.0))[:, 0]
    if preset.min_boxes <= len(keep) <= preset.max_boxes:
        return keep
    ranked = torch.sort(max_conf, descending=True, stable=True).indices
    return ranked[: preset.min_boxes] if len(keep) < preset.min_boxes else ranked[: preset.max_boxes]


def select_class_agnostic(scores: torch.Tensor, boxes: torch.Tensor, preset: Preset) -> torch.Tensor:
    """Indices kept by class-agnostic NMS at the first threshold that leaves >= min_boxes (else the last),
    at most max_boxes, by decreasing score."""
    keep = torch.zeros(0, dtype=torch.int64)
    for thresh in preset.nms_thresholds:
        keep = ops.nms(boxes, scores, thresh)[: preset.max_boxes]
        if len(keep) >= preset.min_boxes:
            break
    return keep


def postprocess(
    proposals: torch.Tensor,
    features: torch.Tensor,
    cls_logits: torch.Tensor,
    attr_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    prepared: Prepared,
    preset: Preset,
) -> Detections:
    """Choose the regions of one image and map their boxes back to original pixels."""
    cls_logits, attr_logits, box_deltas = cls_logits.float(), attr_logits.float(), box_deltas.float()
    probs = torch.softmax(cls_logits, dim=-1)[:, :-1]  # background is the last class
    if preset.attr_softmax == "all":
        attr_probs = torch.softmax(attr_logits, dim=-1)[:, :-1]
    else:
        attr_probs = torch.softmax(attr_logits[:, :-1], dim=-1)
    height, width = prepared.net_size
    if preset.selection == "per-class":
        keep = select_per_class(probs, preset, proposals)
        boxes = proposals[keep]
        objects_conf, objects_id = probs[keep].max(dim=1)
    else:
        regressed = ops.decode_boxes(box_deltas, proposals, BOX_REG_WEIGHTS)
        regressed = ops.clip_boxes(regressed.reshape(-1, 4), height, width).reshape(len(proposals), -1, 4)
        best_scores, best_classes = probs.max(dim=1)
        best_boxes = regressed[torch.arange(len(proposals), device=regressed.device), best_classes]
        keep = select_class_agnostic(best_scores, best_boxes, preset)
        boxes, objects_conf, objects_id = best_boxes[keep], best_scores[keep], best_classes[keep]
    attrs_conf, attrs_id = attr_probs[keep].max(dim=1)
    boxes = boxes.clone()
    boxes[:, 0::2] = (boxes[:, 0::2] * prepared.scale_x).clamp(0, prepared.width)
    boxes[:, 1::2] = (boxes[:, 1::2] * prepared.scale_y).clamp(0, prepared.height)
    return Detections(
        boxes=boxes.cpu(),
        features=features[keep].float().cpu(),
        objects_id=objects_id.cpu(),
        objects_conf=objects_conf.cpu(),
        attrs_id=attrs_id.cpu(),
        attrs_conf=attrs_conf.cpu(),
    )


def memory_format(preset: Preset) -> torch.memory_format:
    """Channels-last with the preset's fast numerics, else NCHW."""
    return torch.channels_last if preset.fast_numerics else torch.contiguous_format


def detect(
    model: Detector,
    batch: list[Prepared],
    preset: Preset,
    device: torch.device,
    amp: bool = False,
    roi_chunk: int = 60,
    timer: StageTimer | None = None,
) -> list[Detections]:
    """Run the detector on images of one network size (stacked into one batch)."""
    timer = timer or StageTimer()
    sizes = {p.net_size for p in batch}
    if len(sizes) != 1:
        raise ValueError(f"detect() needs images of one network size, got {sorted(sizes)}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    cfg = model.cfg
    with torch.inference_mode():
        with autocast:
            proposals, rois, feats = _proposals(model, batch, preset, device, timer)
            with timer("roi_pool", device):
                pooled = ops.roi_pool(feats, rois, cfg.pooler_resolution, 1.0 / cfg.stride)
                pooled = pooled.contiguous(memory_format=memory_format(preset))
            region_feats = []
            with timer("res5", device):
                for start in range(0, len(rois), roi_chunk):
                    region_feats.append(model.region_features(pooled[start : start + roi_chunk]))
            with timer("predictor", device):
                region = torch.cat(region_feats) if region_feats else feats.new_zeros(0, cfg.feat_dim)
                cls_logits, attr_logits, box_deltas = model.roi_heads.box_predictor(region)
        with timer("select", device):
            out, start = [], 0
            for proposals_i, p in zip(proposals, batch):
                end = start + len(proposals_i)
                part = slice(start, end)
                out.append(
                    postprocess(
                        proposals_i, region[part], cls_logits[part], attr_logits[part], box_deltas[part], p, preset
                    )
                )
                start = end
    return out


def _proposals(
    model: Detector, batch: list[Prepared], preset: Preset, device: torch.device, timer: StageTimer
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Backbone and RPN: proposals per image, all of them as (K, 5) rois, and the res4 map."""
    with timer("backbone", device):
        x = torch.stack([p.pixels for p in batch]).to(device, non_blocking=True)
        x = x.contiguous(memory_format=memory_format(preset))
        feats = model.backbone(x)
    with timer("rpn", device):
        logits, deltas = model.proposal_generator.rpn_head(feats)
        anchors = model.proposal_generator.anchor_generator(feats.shape[2], feats.shape[3]).float()
        proposals = [rpn_proposals(logits[i], deltas[i], anchors, p, preset) for i, p in enumerate(batch)]
        rois = torch.cat(
            [torch.cat([torch.full((len(b), 1), float(i), device=b.device), b], 1) for i, b in enumerate(proposals)]
        )
    return proposals, rois, feats
