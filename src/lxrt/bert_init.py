"""Initialize the language side of LXMERT from a BERT checkpoint, as the original pretraining did.

Accepts a HuggingFace BERT folder (``config.json`` with ``pytorch_model.bin`` or
``model.safetensors``) or a bare weights file. BERT's embeddings, its first ``llayers`` layers and
its pooler are copied; everything else keeps its initialization.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .checkpoint import CheckpointError, LoadReport, load_state, read_state_dict
from .config import LXRTConfig
from .fileio import describe_file

_CHECKED_FIELDS = (
    "vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")


def _find_weights(path: Path) -> tuple[Path, Path | None]:
    if path.is_file():
        config = path.parent / "config.json"
        return path, config if config.is_file() else None
    if not path.is_dir():
        raise CheckpointError(f"BERT checkpoint not found: {path}")
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            config = path / "config.json"
            return path / name, config if config.is_file() else None
    raise CheckpointError(f"{path}: no BERT weights (looked for {', '.join(_WEIGHT_FILES)})")


def check_bert_config(config_path: Path, config: LXRTConfig) -> None:
    """Raise if the BERT checkpoint's sizes differ from the model's."""
    try:
        bert = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{config_path}: malformed JSON ({e}); it is {describe_file(config_path)}, expected a BERT config.json"
        ) from None
    wrong = [
        f"{name}: checkpoint {bert[name]} vs model {getattr(config, name)}"
        for name in _CHECKED_FIELDS
        if name in bert and bert[name] != getattr(config, name)
    ]
    if wrong:
        raise CheckpointError(f"{config_path}: BERT sizes differ from the LXMERT config: " + "; ".join(wrong))


def bert_to_lxrt_keys(key: str, llayers: int) -> str | None:
    """BERT key -> ``LXRTModel`` key, or None for what LXMERT does not take (heads, upper layers)."""
    key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.startswith("embeddings.position_ids"):
        return None
    if key.startswith(("embeddings.", "pooler.")):
        return key
    if key.startswith("encoder.layer."):
        index = int(key.split(".")[2])
        return key if index < llayers else None
    return None


def load_bert_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy BERT weights into an ``LXRTModel``; returns what was loaded and what kept its init."""
    weights, config_path = _find_weights(Path(path))
    config: LXRTConfig = model.config
    if config_path is not None:
        check_bert_config(config_path, config)
    state = {}
    for k, v in read_state_dict(weights).items():
        new = bert_to_lxrt_keys(k, config.llayers)
        if new is not None:
            state[new] = v
    if not any(k.startswith("encoder.layer.") for k in state):
        raise CheckpointError(f"{weights}: no BERT encoder layers found (is this a BERT checkpoint?)")
    return load_state(model, state, strict=False, source=str(weights))
