"""Task models: the LXMERT encoder and an answer MLP on its pooled output.

Key layout of the original fine-tuned snapshots: ``lxrt_encoder.model.bert.*`` and
``logit_fc.{0,2,3}.*``.
"""

from __future__ import annotations

from torch import Tensor, nn

from lxrt import LXRTConfig, LXRTEncoder, answer_mlp, init_bert_weights


class QAModel(nn.Module):
    """VQA / GQA: pooled (sentence, image) vector -> answer scores."""

    def __init__(self, config: LXRTConfig, num_answers: int, pooled_only: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pooled_only = pooled_only
        self.lxrt_encoder = LXRTEncoder(config)
        h = config.hidden_size
        self.logit_fc = answer_mlp(h, 2 * h, num_answers, config.layer_norm_eps)
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
        out = self.lxrt_encoder(
            input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask, pooled_only=self.pooled_only
        )
        return self.logit_fc(out.pooled)


class NLVR2Model(nn.Module):
    """NLVR2: one sentence with two images -> concat of the two pooled vectors -> 2 logits.

    Inputs hold 2B pairs, rows 2i and 2i+1 being example i's sentence with its two images.
    """

    def __init__(self, config: LXRTConfig, pooled_only: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pooled_only = pooled_only
        self.lxrt_encoder = LXRTEncoder(config)
        h = config.hidden_size
        self.logit_fc = answer_mlp(2 * h, 2 * h, 2, config.layer_norm_eps)
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
        if input_ids.shape[0] % 2:
            raise ValueError(f"NLVR2 inputs must hold 2 pairs per example, got {input_ids.shape[0]} rows")
        out = self.lxrt_encoder(
            input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask, pooled_only=self.pooled_only
        )
        pooled = out.pooled.reshape(-1, 2 * out.pooled.shape[-1])
        return self.logit_fc(pooled)
