"""LXMERT in PyTorch: encoder, heads, tokenizer and checkpoint formats of the original.

Public API::

    from lxrt import LXRTConfig, LXRTModel, LXRTEncoder, LXMERTForPretraining, answer_mlp
    from lxrt import LXRTTokenizer
    from lxrt import read_state_dict, load_state, load_encoder, save_state_dict, load_bert_weights
    from lxrt import to_hf_state_dict, from_hf_state_dict
"""

from .bert_init import load_bert_weights
from .checkpoint import (
    CheckpointError,
    CheckpointShapeError,
    LoadReport,
    atomic_write,
    encoder_state,
    load_encoder,
    load_state,
    read_state_dict,
    remap_answer_head,
    resolve_checkpoint,
    save_state_dict,
)
from .config import LXRTConfig
from .heads import VISUAL_LOSSES, answer_mlp
from .hf import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from .modeling import LXRTModel, LXRTOutput, init_bert_weights
from .models import LXMERTForPretraining, LXRTEncoder, PretrainingOutput

__all__ = [
    "VISUAL_LOSSES",
    "CheckpointError",
    "CheckpointShapeError",
    "LXMERTForPretraining",
    "LXRTConfig",
    "LXRTEncoder",
    "LXRTModel",
    "LXRTOutput",
    "LoadReport",
    "PretrainingOutput",
    "answer_mlp",
    "atomic_write",
    "config_from_hf",
    "encoder_state",
    "from_hf_state_dict",
    "hf_config",
    "init_bert_weights",
    "load_bert_weights",
    "load_encoder",
    "load_state",
    "read_state_dict",
    "remap_answer_head",
    "resolve_checkpoint",
    "save_state_dict",
    "to_hf_state_dict",
]
