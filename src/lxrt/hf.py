"""Conversion to and from HuggingFace ``transformers`` LXMERT state dicts and configs.

HF's ``LxmertForPreTraining`` uses the original names under ``lxmert.`` instead of ``bert.``;
its ``LxmertModel`` has the encoder keys with no prefix; its ``LxmertForQuestionAnswering`` (the
released ``unc-nlp/lxmert-vqa-uncased`` and ``-gqa-uncased``) is the encoder under ``lxmert.`` and
the answer MLP under ``answer_head.logit_fc.``, the same layers as a fine-tuned snapshot's
``logit_fc.``. ``transformers`` is only imported by ``hf_config`` (it is not a runtime dependency).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .checkpoint import CheckpointError, StateDict, encoder_state, strip_module
from .config import LXRTConfig

_ENCODER_ROOTS = ("embeddings.", "encoder.", "pooler.")
_TASK_ENCODER = "lxrt_encoder.model.bert."
_HF_ANSWER_HEAD = "answer_head.logit_fc."
_PRETRAINING_HEADS = ("cls.", "obj_predict_head.")
LAYOUTS = ("auto", "pretraining", "task")


def to_hf_state_dict(state: Mapping[str, Tensor], base_model: bool = False) -> StateDict:
    """Our (original-layout) state dict -> ``LxmertForPreTraining`` keys, or ``LxmertModel`` keys
    when ``base_model`` (encoder only). A fine-tuned snapshot (``lxrt_encoder.model.bert.*``,
    ``logit_fc.*``) gives ``LxmertForQuestionAnswering`` keys."""
    if base_model:
        return dict(encoder_state(state))
    out: StateDict = {}
    for k, v in state.items():
        k = strip_module(k)
        if k.startswith(_TASK_ENCODER):
            k = "lxmert." + k[len(_TASK_ENCODER):]
        elif k.startswith("bert."):
            k = "lxmert." + k[len("bert."):]
        elif k.startswith("logit_fc."):
            k = _HF_ANSWER_HEAD + k[len("logit_fc."):]
        out[k] = v
    return out


def hf_layout(state: Mapping[str, Tensor]) -> str:
    """``"task"`` for an ``LxmertForQuestionAnswering`` state dict (an answer head and no pretraining
    heads), else ``"pretraining"`` (``LxmertForPreTraining``, ``LxmertModel``)."""
    keys = list(state)
    has_answer_head = any(k.startswith(_HF_ANSWER_HEAD) for k in keys)
    has_pretraining_heads = any(k.startswith(_PRETRAINING_HEADS) for k in keys)
    return "task" if has_answer_head and not has_pretraining_heads else "pretraining"


def from_hf_state_dict(state: Mapping[str, Tensor], layout: str = "auto") -> StateDict:
    """HF LXMERT keys -> ours.

    ``layout="pretraining"``: ``LxmertForPreTraining`` or ``LxmertModel`` keys -> our pretraining
    layout (``bert.*``, ``cls.*``, ``obj_predict_head.*``, ``answer_head.*``). ``layout="task"``:
    ``LxmertForQuestionAnswering`` keys -> a fine-tuned snapshot in the original layout
    (``lxrt_encoder.model.bert.*``, ``logit_fc.*``), which ``tasks.models.Classifier`` loads.
    ``"auto"`` picks by the keys (:func:`hf_layout`). ``position_ids`` buffers (saved by some HF
    versions; always ``arange``) are dropped.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        layout = hf_layout(state)
    encoder = _TASK_ENCODER if layout == "task" else "bert."
    out: StateDict = {}
    for k, v in state.items():
        k = strip_module(k)
        if k.endswith("embeddings.position_ids"):
            continue
        if k.startswith("lxmert."):
            k = encoder + k[len("lxmert."):]
        elif k.startswith(_ENCODER_ROOTS):
            k = encoder + k
        elif layout == "task" and k.startswith(_HF_ANSWER_HEAD):
            k = "logit_fc." + k[len(_HF_ANSWER_HEAD):]
        elif layout == "task" or not k.startswith(("cls.", "obj_predict_head.", "answer_head.")):
            kind = "LxmertForQuestionAnswering" if layout == "task" else "LxmertForPreTraining/LxmertModel"
            raise CheckpointError(f"unexpected key {k!r} in an HF {kind} state dict")
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
    fields = {ours: d[hf_name] for ours, hf_name in _FIELD_MAP.items() if hf_name in d}
    if "layer_norm_eps" in d:
        fields["layer_norm_eps"] = d["layer_norm_eps"]
    return LXRTConfig(**fields)


def hf_answer_labels(hf: Mapping[str, Any]) -> list[str] | None:
    """The answers an HF QA ``config.json`` names (``id2label``, in label order), or None when it names
    none: HF's defaults (``LABEL_0``, ...) or a table of another size than ``num_qa_labels``."""
    table = hf.get("id2label")
    count = hf.get("num_qa_labels")
    if not isinstance(table, Mapping) or not isinstance(count, int) or len(table) != count:
        return None
    try:
        labels = [table.get(str(i), table.get(i)) for i in range(count)]  # type: ignore[call-overload]
    except TypeError:
        return None
    if not all(isinstance(a, str) for a in labels) or all(a == f"LABEL_{i}" for i, a in enumerate(labels)):
        return None
    return labels
