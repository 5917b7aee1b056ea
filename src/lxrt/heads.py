"""Heads on the LXMERT encoder: BERT-style pretraining heads and the fine-tuning answer MLP.

Names follow the original checkpoints: ``cls.predictions`` (masked LM, decoder tied to the word
embeddings), ``cls.seq_relationship`` (matching), ``obj_predict_head.decoder_dict.{obj,attr,feat}``
and ``answer_head.logit_fc.{0,2,3}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import LXRTConfig
from .encoder import GeLU

VISUAL_LOSSES = ("obj", "attr", "feat")


def answer_mlp(in_dim: int, hidden_dim: int, num_answers: int, eps: float = 1e-12) -> nn.Sequential:
    """Linear -> GeLU -> LayerNorm -> Linear, the answer classifier of every task (``logit_fc``)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        GeLU(),
        nn.LayerNorm(hidden_dim, eps=eps),
        nn.Linear(hidden_dim, num_answers),
    )


class BertPredictionHeadTransform(nn.Module):
    """dense -> GeLU -> LayerNorm, shared shape of the LM and visual heads."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = GeLU()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """Masked-LM head; ``decoder.weight`` is the word-embedding matrix itself."""

    def __init__(self, config: LXRTConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x)) + self.bias


class BertPreTrainingHeads(nn.Module):
    """Masked-LM scores per token and the matched / mismatched score on the pooled output."""

    def __init__(self, config: LXRTConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, lang: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return self.predictions(lang), self.seq_relationship(pooled)


class BertVisualObjHead(nn.Module):
    """Per-region predictions: object class, attribute class, and the 2048-d feature itself."""

    def __init__(self, config: LXRTConfig, visual_losses: Sequence[str] = VISUAL_LOSSES) -> None:
        super().__init__()
        unknown = set(visual_losses) - set(VISUAL_LOSSES)
        if unknown:
            raise ValueError(f"unknown visual losses {sorted(unknown)}; choose from {VISUAL_LOSSES}")
        out_dims = {
            "obj": config.num_object_labels,
            "attr": config.num_attr_labels,
            "feat": config.visual_feat_dim,
        }
        self.transform = BertPredictionHeadTransform(config)
        self.decoder_dict = nn.ModuleDict(
            {key: nn.Linear(config.hidden_size, out_dims[key]) for key in visual_losses}
        )

    def forward(self, visn: Tensor) -> dict[str, Tensor]:
        x = self.transform(visn)
        return {key: decoder(x) for key, decoder in self.decoder_dict.items()}


class BertVisualAnswerHead(nn.Module):
    """Pretraining image-QA head over the pooled output (9500 answers by default)."""

    def __init__(self, config: LXRTConfig, num_answers: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.logit_fc = answer_mlp(h, 2 * h, num_answers, config.layer_norm_eps)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.logit_fc(pooled)
