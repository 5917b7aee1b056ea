"""Task models: the LXMERT encoder and an answer MLP on its pooled output, or on each region's output.

Key layout of the original fine-tuned snapshots: ``lxrt_encoder.model.bert.*`` and
``logit_fc.{0,2,3}.*``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lxrt import LXRTConfig, TaskEncoder, answer_mlp, init_bert_weights


class Classifier(nn.Module):
    """Pooled (sentence, image) vector(s) -> class scores: the model of every fine-tuning task.

    With ``images_per_example`` k > 1 the inputs hold k pairs per example (rows ki .. ki+k-1 are
    example i's sentence with each of its images) and the MLP reads their k pooled vectors side by
    side. VQA/GQA: k=1 over the answer table; NLVR2: k=2, two classes.
    """

    def __init__(
        self, config: LXRTConfig, num_classes: int, pooled_only: bool = True, images_per_example: int = 1
    ) -> None:
        super().__init__()
        if images_per_example < 1:
            raise ValueError(f"images_per_example must be >= 1, got {images_per_example}")
        self.config = config
        self.pooled_only = pooled_only
        self.images_per_example = images_per_example
        self.lxrt_encoder = TaskEncoder(config)
        h = config.hidden_size
        self.logit_fc = answer_mlp(images_per_example * h, 2 * h, num_classes, config.layer_norm_eps)
        self.logit_fc.apply(init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        feats: Tensor,
        boxes: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_mask: Tensor | None = None,
    ) -> Tensor:
        k = self.images_per_example
        if input_ids.shape[0] % k:
            raise ValueError(f"inputs must hold {k} pairs per example, got {input_ids.shape[0]} rows")
        out = self.lxrt_encoder(
            input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask, pooled_only=self.pooled_only
        )
        pooled = out.pooled if k == 1 else out.pooled.reshape(-1, k * out.pooled.shape[-1])
        return self.logit_fc(pooled)


class NLVR2Model(Classifier):
    """NLVR2: one sentence with two images -> concat of the two pooled vectors -> 2 logits."""

    def __init__(self, config: LXRTConfig, pooled_only: bool = True) -> None:
        super().__init__(config, 2, pooled_only=pooled_only, images_per_example=2)


class RegionScorer(nn.Module):
    """(Sentence, image) -> one score per region (B, N), from an MLP on the encoder's vision outputs: the model
    of region selection (referring expressions). Padded regions (``visual_mask`` 0) get the lowest float."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.config = config
        self.lxrt_encoder = TaskEncoder(config)
        h = config.hidden_size
        self.logit_fc = answer_mlp(h, 2 * h, 1, config.layer_norm_eps)
        self.logit_fc.apply(init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        feats: Tensor,
        boxes: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_mask: Tensor | None = None,
    ) -> Tensor:
        out = self.lxrt_encoder(input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask)
        scores = self.logit_fc(out.visn).squeeze(-1).float()
        if visual_mask is None:
            return scores
        return scores.masked_fill(visual_mask == 0, torch.finfo(scores.dtype).min)
