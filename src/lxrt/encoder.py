"""The LXMERT encoder: language, object-relationship and cross-modality transformers.

Module and parameter names follow the original code so that its checkpoints load key for key
(``bert.embeddings.*``, ``bert.encoder.layer.{i}``, ``r_layers``, ``x_layers``, ``visn_fc``,
``visual_attention.att``, ``bert.pooler``). The numerics are the original's: post-LayerNorm
blocks with eps 1e-12, exact (erf) GeLU, additive -10000 attention masks, and one cross-attention
sub-layer shared by both directions. Attention runs through ``scaled_dot_product_attention`` so
fused kernels apply on GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LXRTConfig

MASK_VALUE = -10000.0
"""Additive score for masked keys, as in the original (safe in fp16 and bf16)."""


class GeLU(nn.Module):
    """Exact GeLU, x * Phi(x), as one fused kernel (the original's erf formula, unfused)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x)


def extended_mask(mask: Tensor | None) -> Tensor | None:
    """(B, L) 1/0 mask -> (B, 1, 1, L) additive mask of 0 / -10000 in float32."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * MASK_VALUE


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (padding_idx 0 on all three)."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings "
                f"{self.position_embeddings.num_embeddings}"
            )
        positions = torch.arange(seq_len, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class BertAttention(nn.Module):
    """Multi-head attention: queries from ``hidden``, keys and values from ``context``.

    No output projection here: the following ``BertAttOutput`` holds it, as in the original.
    The parameters stay three ``nn.Linear`` (the checkpoints' ``query``/``key``/``value``), but
    projections of the same rows run as one matrix multiply over the concatenated weights.
    """

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: Tensor, parts: tuple[nn.Linear, ...]) -> tuple[Tensor, ...]:
        """``x`` through several of the projections at once, split back per projection."""
        if len(parts) == 1:
            return (parts[0](x),)
        weight = torch.cat([p.weight for p in parts])
        bias = torch.cat([p.bias for p in parts])
        return F.linear(x, weight, bias).chunk(len(parts), dim=-1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Scaled dot-product attention of projected (B, n, H) tensors; heads merged back."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        b, _, n, _ = out.shape
        return out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)

    def forward(self, hidden: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        if hidden is context:
            q, k, v = self._project(hidden, (self.query, self.key, self.value))
        else:
            (q,) = self._project(hidden, (self.query,))
            k, v = self._project(context, (self.key, self.value))
        return self.attend(q, k, v, mask)

    def both_ways(
        self, a: Tensor, a_mask: Tensor | None, b: Tensor, b_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``forward(a, b, b_mask)`` and ``forward(b, a, a_mask)`` with one projection multiply."""
        n = a.shape[1]
        q, k, v = self._project(torch.cat([a, b], dim=1), (self.query, self.key, self.value))
        a_out = self.attend(q[:, :n], k[:, n:], v[:, n:], b_mask)
        b_out = self.attend(q[:, n:], k[:, :n], v[:, :n], a_mask)
        return a_out, b_out


class BertAttOutput(nn.Module):
    """Projection, dropout, residual, LayerNorm after an attention block."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertSelfattLayer(nn.Module):
    """Self-attention sub-layer (attention ``self`` + ``output``)."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.self = BertAttention(config)
        self.output = BertAttOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None, query: Tensor | None = None) -> Tensor:
        """Attend over ``x``; ``query`` (default ``x``) selects the rows that are computed."""
        q = x if query is None else query
        return self.output(self.self(q, x, mask), q)


class BertCrossattLayer(nn.Module):
    """Cross-attention sub-layer (attention ``att`` + ``output``)."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.att = BertAttention(config)
        self.output = BertAttOutput(config)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        return self.output(self.att(x, context, context_mask), x)

    def both_ways(
        self, a: Tensor, a_mask: Tensor | None, b: Tensor, b_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(forward(a, b, b_mask), forward(b, a, a_mask))``: the shared weights let both
        directions run their projections and output layer as single multiplies."""
        n = a.shape[1]
        a_att, b_att = self.att.both_ways(a, a_mask, b, b_mask)
        out = self.output(torch.cat([a_att, b_att], dim=1), torch.cat([a, b], dim=1))
        return out[:, :n], out[:, n:]


class BertIntermediate(nn.Module):
    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = GeLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertLayer(nn.Module):
    """Transformer layer (self-attention, feed-forward) for the language and relationship stacks."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.attention = BertSelfattLayer(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class LXRTXLayer(nn.Module):
    """Cross-modality layer: shared cross-attention both ways, then self-attention, then FFN."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        # One module serves both directions; the name is the original's.
        self.visual_attention = BertCrossattLayer(config)
        self.lang_self_att = BertSelfattLayer(config)
        self.visn_self_att = BertSelfattLayer(config)
        self.lang_inter = BertIntermediate(config)
        self.lang_output = BertOutput(config)
        self.visn_inter = BertIntermediate(config)
        self.visn_output = BertOutput(config)

    def forward(
        self,
        lang: Tensor,
        lang_mask: Tensor | None,
        visn: Tensor,
        visn_mask: Tensor | None,
        cls_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Both streams, or with ``cls_only`` only the language [CLS] row, shape (B, 1, H).

        With ``cls_only`` every language row still attends to vision (the self-attention needs
        them as keys), but the vision branch and the other rows' projections and FFN are skipped.
        """
        if cls_only:
            lang_c = self.visual_attention(lang, visn, visn_mask)
            cls = self.lang_self_att(lang_c, lang_mask, query=lang_c[:, :1])
            return self.lang_output(self.lang_inter(cls), cls), None
        # Both directions read the layer's inputs, not each other's outputs.
        lang_c, visn_c = self.visual_attention.both_ways(lang, lang_mask, visn, visn_mask)
        lang_s = self.lang_self_att(lang_c, lang_mask)
        visn_s = self.visn_self_att(visn_c, visn_mask)
        return (
            self.lang_output(self.lang_inter(lang_s), lang_s),
            self.visn_output(self.visn_inter(visn_s), visn_s),
        )


class VisualFeatEncoder(nn.Module):
    """(LayerNorm(W_f feats) + LayerNorm(W_b boxes)) / 2, then dropout."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.visn_fc = nn.Linear(config.visual_feat_dim, h)
        self.visn_layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.box_fc = nn.Linear(config.visual_pos_dim, h)
        self.box_layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        x = self.visn_layer_norm(self.visn_fc(feats))
        y = self.box_layer_norm(self.box_fc(boxes))
        return self.dropout((x + y) / 2)


class LXRTEncoderStack(nn.Module):
    """Visual encoder, language layers, relationship layers and cross-modality layers."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.visn_fc = VisualFeatEncoder(config)
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.llayers))
        self.x_layers = nn.ModuleList(LXRTXLayer(config) for _ in range(config.xlayers))
        self.r_layers = nn.ModuleList(BertLayer(config) for _ in range(config.rlayers))

    def forward(
        self,
        lang: Tensor,
        lang_mask: Tensor | None,
        feats: Tensor,
        boxes: Tensor,
        visn_mask: Tensor | None,
        cls_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        visn = self.visn_fc(feats, boxes)
        for layer in self.layer:
            lang = layer(lang, lang_mask)
        for layer in self.r_layers:
            visn = layer(visn, visn_mask)
        last = len(self.x_layers) - 1
        for i, layer in enumerate(self.x_layers):
            lang, visn = layer(lang, lang_mask, visn, visn_mask, cls_only=cls_only and i == last)
        return lang, visn


class BertPooler(nn.Module):
    """tanh(W h_[CLS]) on the language output."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, lang: Tensor) -> Tensor:
        return self.activation(self.dense(lang[:, 0]))


@dataclass
class LXRTOutput:
    """Encoder outputs. ``lang`` (B, L, H) or (B, 1, H) with ``pooled_only``; ``visn`` (B, N, H) or None."""

    lang: Tensor
    visn: Tensor | None
    pooled: Tensor


class LXRTModel(nn.Module):
    """The LXMERT encoder with its pooler (keys ``embeddings.*``, ``encoder.*``, ``pooler.*``)."""

    def __init__(self, config: LXRTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = LXRTEncoderStack(config)
        self.pooler = BertPooler(config)

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
        """Encode B (sentence, image) pairs.

        ``pooled_only`` skips the work no pooled-output head uses (the last cross layer's vision
        branch and non-[CLS] language rows); ``pooled`` is unchanged, ``visn`` is None and ``lang``
        holds only the [CLS] row.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.xlayers == 0:
            pooled_only = False
        lang = self.embeddings(input_ids, token_type_ids)
        feats = feats.to(self.encoder.visn_fc.visn_fc.weight.dtype)
        boxes = boxes.to(self.encoder.visn_fc.box_fc.weight.dtype)
        lang, visn = self.encoder(
            lang, extended_mask(attention_mask), feats, boxes, extended_mask(visual_mask), cls_only=pooled_only
        )
        return LXRTOutput(lang=lang, visn=visn, pooled=self.pooler(lang))


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """The original initialization: Linear/Embedding ~ N(0, std), LayerNorm 1/0, Linear bias 0.

    Use with ``model.apply``. Embedding padding rows are re-drawn too, as in the original.
    """
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
