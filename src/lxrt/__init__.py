"""LXMERT in PyTorch: encoder, heads, tokenizer and checkpoint formats of the original.

Public API::

    from lxrt import LXRTConfig, LXRTModel, TaskEncoder, LXMERTForPretraining, answer_mlp
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
    export_safetensors,
    load_encoder,
    load_state,
    read_state_dict,
    remap_answer_head,
    resolve_checkpoint,
    save_state_dict,
)
from .config import LXRTConfig
from .encoder import LXRTModel, LXRTOutput, init_bert_weights
from .heads import VISUAL_LOSSES, answer_mlp
from .hf import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from .models import LXMERTForPretraining, PretrainingOutput, TaskEncoder
from .tokenizer import LXRTTokenizer, TokenizedBatch

__all__ = [
    "CheckpointError",
    "CheckpointShapeError",
    "LXMERTForPretraining",
    "LXRTConfig",
    "LXRTModel",
    "LXRTOutput",
    "LXRTTokenizer",
    "LoadReport",
    "PretrainingOutput",
    "TaskEncoder",
    "TokenizedBatch",
    "VISUAL_LOSSES",
    "answer_mlp",
    "atomic_write",
    "config_from_hf",
    "encoder_state",
    "export_safetensors",
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
