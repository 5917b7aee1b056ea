"""Conversion to and from HuggingFace ``transformers`` LXMERT state dicts and configs.

HF's ``LxmertForPreTraining`` uses the original names under ``lxmert.`` instead of ``bert.``;
its ``LxmertModel`` has the encoder keys with no prefix. ``transformers`` is only imported by
``hf_config`` (it is not a runtime dependency).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .checkpoint import CheckpointError, StateDict, encoder_state, strip_module
from .config import LXRTConfig

_ENCODER_ROOTS = ("embeddings.", "encoder.", "pooler.")


def to_hf_state_dict(state: Mapping[str, Tensor], base_model: bool = False) -> StateDict:
    """Our (original-layout) state dict -> ``LxmertForPreTraining`` keys, or ``LxmertModel`` keys
    when ``base_model`` (encoder only)."""
    if base_model:
        return dict(encoder_state(state))
    out: StateDict = {}
    for k, v in state.items():
        k = strip_module(k)
        if k.startswith("lxrt_encoder.model.bert."):
            k = "lxmert." + k[len("lxrt_encoder.model.bert."):]
        elif k.startswith("bert."):
            k = "lxmert." + k[len("bert."):]
        out[k] = v
    return out


def from_hf_state_dict(state: Mapping[str, Tensor]) -> StateDict:
    """``LxmertForPreTraining`` or ``LxmertModel`` keys -> our pretraining layout (``bert.*`` ...)."""
    out: StateDict = {}
    for k, v in state.items():
        if k.startswith("lxmert."):
            k = "bert." + k[len("lxmert."):]
        elif k.startswith(_ENCODER_ROOTS):
            k = "bert." + k
        elif not k.startswith(("cls.", "obj_predict_head.", "answer_head.")):
            raise CheckpointError(f"unexpected key {k!r} in an HF LXMERT state dict")
        out[k] = v
    return out


_FIELD_MAP = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "initializer_range": "initializer_range",
    "llayers": "l_layers",
    "xlayers": "x_layers",
    "rlayers": "r_layers",
    "visual_feat_dim": "visual_feat_dim",
    "visual_pos_dim": "visual_pos_dim",
    "num_object_labels": "num_object_labels",
    "num_attr_labels": "num_attr_labels",
    "num_qa_labels": "num_qa_labels",
}


def hf_config_dict(config: LXRTConfig) -> dict[str, Any]:
    """Keyword arguments of ``transformers.LxmertConfig`` equal to ``config``."""
    d = {hf: getattr(config, ours) for ours, hf in _FIELD_MAP.items()}
    d["hidden_act"] = "gelu"
    return d


def hf_config(config: LXRTConfig) -> Any:
    """A ``transformers.LxmertConfig`` equal to ``config`` (needs ``transformers``)."""
    from transformers import LxmertConfig

    return LxmertConfig(**hf_config_dict(config))


def config_from_hf(hf: Mapping[str, Any] | Any) -> LXRTConfig:
    """``LxmertConfig`` (object or its ``config.json`` dict) -> ``LXRTConfig``."""
    d = hf if isinstance(hf, Mapping) else hf.to_dict()
    return LXRTConfig(**{ours: d[hf_name] for ours, hf_name in _FIELD_MAP.items() if hf_name in d})
