"""The six pretraining losses of LXMERT and their sum.

Definitions (``-1`` marks "no target" everywhere):

- ``Mask_LM``: cross-entropy over the vocabulary, mean over the tokens that have a label.
- ``Matched``: cross-entropy over {mismatched, matched} on the pooled output, mean over the batch.
- ``Obj`` / ``Attr``: per-region cross-entropy against the detector's class, weighted by the
  detector's confidence, summed and divided by the number of regions, times ``1/0.15``.
- ``Feat``: per-region smooth-L1 (mean over feature dims) against the uncorrupted feature, times
  feat_mask, divided by the number of regions, times ``1/0.15``.
- ``QA``: cross-entropy over the answer table, mean over examples that have an answer.

Two compatibility modes (``--lossCompat``):

- ``original`` (the default) reproduces the released code: Obj/Attr are computed on *every*
  region, masked or not, and Mask_LM also on mismatched pairs (whose sentence belongs to another
  image). The released checkpoints were trained this way.
- ``corrected`` predicts classes only for masked regions (weight x feat_mask, same normalizer,
  so ``1/0.15`` again turns the sum into roughly a mean over masked regions, as for Feat) and
  drops Mask_LM and QA targets of mismatched pairs (their words cannot be grounded in the image
  they are paired with; the original's data pipeline already drops their QA targets).

Losses with no target in a batch are 0 (the original would give NaN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lxrt import VISUAL_LOSSES, PretrainingOutput

from .masking import IGNORE

LOSS_COMPAT = ("original", "corrected")
VISUAL_LOSS_WEIGHT = 1 / 0.15
LOSS_NAMES = {"obj": "Obj", "attr": "Attr", "feat": "Feat"}


@dataclass(frozen=True)
class LossOptions:
    """Which losses are on and how they are computed."""

    compat: str = "original"
    mask_lm: bool = True
    matched: bool = True
    visual_losses: tuple[str, ...] = VISUAL_LOSSES  # empty: no masked-object prediction
    qa: bool = True
    visual_weight: float = VISUAL_LOSS_WEIGHT

    def __post_init__(self) -> None:
        if self.compat not in LOSS_COMPAT:
            raise ValueError(f"loss compatibility mode must be one of {LOSS_COMPAT}, got {self.compat!r}")
        unknown = set(self.visual_losses) - set(VISUAL_LOSSES)
        if unknown:
            raise ValueError(f"unknown visual losses {sorted(unknown)}; choose from {VISUAL_LOSSES}")


def _mean_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over rows whose label is not ``IGNORE``; 0 (with a graph) if none.

    Rows without a label are dropped before the softmax.
    """
    keep = labels != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep].float(), labels[keep])


def mask_lm_loss(logits: Tensor, labels: Tensor, is_matched: Tensor | None = None) -> Tensor:
    """Masked-LM loss; with ``is_matched`` given, mismatched pairs' labels are ignored.

    ``logits`` are (B, L, vocab) for every token, or (K, vocab) for the K tokens where ``labels``
    (B, L) is not ``IGNORE``, in row-major order (the model's ``lm_positions``).
    """
    if logits.dim() == 2:
        positions = labels_positions(labels)
        selected = labels[positions]
        if is_matched is not None:
            selected = selected.masked_fill(is_matched.view(-1, 1).expand_as(labels)[positions] == 0, IGNORE)
        return _mean_ce(logits, selected)
    if is_matched is not None:
        labels = labels.masked_fill(is_matched.view(-1, 1) == 0, IGNORE)
    return _mean_ce(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def labels_positions(labels: Tensor) -> Tensor:
    """Tokens that carry a masked-LM label (what the model scores with ``lm_positions``)."""
    return labels != IGNORE


def matched_loss(logits: Tensor, is_matched: Tensor) -> Tensor:
    """Matched / mismatched classification, mean over the batch (index 1 = matched)."""
    return F.cross_entropy(logits.float(), is_matched)


def qa_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Image-QA cross-entropy over examples with an answer (label != -1)."""
    return _mean_ce(logits, labels)


def _num_regions(feat_mask: Tensor, box_mask: Tensor | None) -> Tensor | int:
    """The normalizer of the visual losses: every real region of the batch (B x 36 originally)."""
    return box_mask.sum().clamp(min=1) if box_mask is not None else feat_mask.numel()


def visual_class_loss(
    logits: Tensor,
    labels: Tensor,
    conf: Tensor,
    feat_mask: Tensor | None = None,
    box_mask: Tensor | None = None,
    weight: float = VISUAL_LOSS_WEIGHT,
) -> Tensor:
    """Confidence-weighted region classification (Obj, Attr).

    ``feat_mask`` None gives the original (every region is a target); a mask restricts the
    targets to the masked regions (corrected). ``box_mask`` marks real regions of padded images.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    ce = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE, reduction="none")
    w = conf.reshape(-1).float()
    if feat_mask is not None:
        w = w * feat_mask.reshape(-1).float()
    if box_mask is not None:
        w = w * box_mask.reshape(-1).float()
    return (ce * w).sum() / _num_regions(conf, box_mask) * weight


def feat_regression_loss(
    pred: Tensor,
    target: Tensor,
    feat_mask: Tensor,
    box_mask: Tensor | None = None,
    weight: float = VISUAL_LOSS_WEIGHT,
) -> Tensor:
    """Smooth-L1 regression of the masked regions' features (named 'l2' in the original)."""
    per_region = F.smooth_l1_loss(pred.float(), target.float(), reduction="none").mean(-1).reshape(-1)
    w = feat_mask.reshape(-1).float()
    if box_mask is not None:
        w = w * box_mask.reshape(-1).float()
    return (per_region * w).sum() / _num_regions(feat_mask, box_mask) * weight


def pretraining_loss(
    output: PretrainingOutput,
    targets: Mapping[str, Tensor],
    options: LossOptions,
    box_mask: Tensor | None = None,
    qa_active: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total of the enabled losses and each of them (detached), named as the original logs them.

    ``targets`` are a pretraining batch's (``pretrain.data.collate``); ``qa_active`` False leaves
    the QA loss out (the first stage of the paper's two-stage schedule).
    """
    corrected = options.compat == "corrected"
    is_matched = targets["is_matched"]
    parts: dict[str, Tensor] = {}
    if options.mask_lm:
        if output.lang_logits is None:
            raise ValueError("the masked-LM loss is on but the model has no LM output")
        lm_matched = is_matched if corrected else None
        parts["Mask_LM"] = mask_lm_loss(output.lang_logits, targets["lm_labels"], lm_matched)
    if options.matched:
        parts["Matched"] = matched_loss(output.match_logits, is_matched)
    feat_mask = targets["feat_mask"]
    for key in options.visual_losses:
        if key not in output.visual_logits:
            raise ValueError(f"the {key!r} visual loss is on but the model has no {key!r} decoder")
        logits = output.visual_logits[key]
        if key == "feat":
            target = targets["feat_targets"]
            loss = feat_regression_loss(logits, target, feat_mask, box_mask, options.visual_weight)
        else:
            loss = visual_class_loss(
                logits,
                targets[f"{key}_labels"],
                targets[f"{key}_conf"],
                feat_mask if corrected else None,
                box_mask,
                options.visual_weight,
            )
        parts[LOSS_NAMES[key]] = loss
    if options.qa and qa_active:
        if output.answer_logits is None:
            raise ValueError("the QA loss is on but the model has no answer head")
        labels = targets["qa_labels"]
        if corrected:
            labels = labels.masked_fill(is_matched == 0, IGNORE)
        parts["QA"] = qa_loss(output.answer_logits, labels)
    if not parts:
        raise ValueError("no pretraining loss is enabled")
    total = torch.stack(list(parts.values())).sum()
    return total, {k: v.detach() for k, v in parts.items()}

