"""Whole models built from the encoder and heads, with the original checkpoints' key layout.

- ``LXMERTForPretraining``: keys ``bert.*``, ``cls.*``, ``obj_predict_head.*``, ``answer_head.*``
  (``model_LXRT.pth``, ``EpochXX_LXRT.pth``).
- ``TaskEncoder``: the encoder as task models hold it, keys ``model.bert.*`` (so a task model's
  ``lxrt_encoder.model.bert.*`` matches the original ``BEST.pth``). The original's own
  ``lxrt.entry.LXRTEncoder`` (tokenizer inside, BERT loaded on construction) builds on the same encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .config import LXRTConfig
from .encoder import LXRTModel, LXRTOutput, init_bert_weights
from .heads import VISUAL_LOSSES, BertPreTrainingHeads, BertVisualAnswerHead, BertVisualObjHead


class TaskEncoder(nn.Module):
    """The encoder under ``model.bert``, as the original's task models nest it."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.config = config
        self.model = nn.Module()
        self.model.bert = LXRTModel(config)
        self.apply(init_bert_weights)

    @property
    def bert(self) -> LXRTModel:
        return self.model.bert

    def forward(
        self,
        input_ids: Tensor,
        feats: Tensor,
        boxes: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_mask: Tensor | None = None,
        pooled_only: bool = False,
    ) -> LXRTOutput:
        return self.model.bert(
            input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask, pooled_only=pooled_only
        )


@dataclass
class PretrainingOutput:
    """Scores of every pretraining head; a head that is switched off gives None."""

    lang_logits: Tensor | None  # (B, L, vocab), or (K, vocab) for K selected positions
    match_logits: Tensor  # (B, 2); index 1 = matched
    visual_logits: dict[str, Tensor]  # name -> (B, N, out_dim)
    answer_logits: Tensor | None  # (B, num_qa_labels)
    pooled: Tensor


class LXMERTForPretraining(nn.Module):
    """Encoder plus masked-LM, matching, masked-object and image-QA heads."""

    def __init__(
        self,
        config: LXRTConfig,
        task_mask_lm: bool = True,
        task_matched: bool = True,
        task_obj_predict: bool = True,
        task_qa: bool = True,
        visual_losses: Sequence[str] = VISUAL_LOSSES,
    ) -> None:
        super().__init__()
        self.config = config
        self.task_mask_lm = task_mask_lm
        self.task_matched = task_matched
        self.bert = LXRTModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.obj_predict_head = BertVisualObjHead(config, visual_losses) if task_obj_predict else None
        self.answer_head = BertVisualAnswerHead(config, config.num_qa_labels) if task_qa else None
        self.apply(init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        feats: Tensor,
        boxes: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        visual_mask: Tensor | None = None,
        lm_positions: Tensor | None = None,
    ) -> PretrainingOutput:
        """``lm_positions`` (B, L) bool: score only those tokens with the LM head, giving
        ``lang_logits`` of shape (K, vocab) for the K selected tokens in row-major order (the
        vocabulary projection is the largest single matmul of a pretraining step)."""
        out = self.bert(input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask)
        lang = out.lang if lm_positions is None else out.lang[lm_positions]
        lang_logits = self.cls.predictions(lang) if self.task_mask_lm else None
        return PretrainingOutput(
            lang_logits=lang_logits,
            match_logits=self.cls.seq_relationship(out.pooled),
            visual_logits=self.obj_predict_head(out.visn) if self.obj_predict_head is not None else {},
            answer_logits=self.answer_head(out.pooled) if self.answer_head is not None else None,
            pooled=out.pooled,
        )
