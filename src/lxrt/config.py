"""Model configuration: one dataclass for every size of the LXMERT encoder and its heads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LXRTConfig:
    """Sizes of the LXMERT encoder (BERT-base text side, Faster R-CNN visual side) and its heads.

    Defaults are the released model: BERT-base-uncased with 9 language, 5 cross-modality and
    5 object-relationship layers over 36 regions of 2048-d features.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    llayers: int = 9
    xlayers: int = 5
    rlayers: int = 5
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    num_object_labels: int = 1600
    num_attr_labels: int = 400
    num_qa_labels: int = 9500

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("llayers", "xlayers", "rlayers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes: Any) -> LXRTConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LXRTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LXRTConfig fields: {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> LXRTConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def tiny(cls, **changes: Any) -> LXRTConfig:
        """A small config for tests and quick runs (hidden 32, 2 heads, 1/1/1 layers)."""
        base = dict(
            vocab_size=30522, hidden_size=32, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, llayers=1, xlayers=1, rlayers=1,
            visual_feat_dim=64, num_object_labels=16, num_attr_labels=8, num_qa_labels=20,
        )
        base.update(changes)
        return cls(**base)
