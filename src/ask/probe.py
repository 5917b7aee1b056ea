"""Which regions a question looks at: the [CLS] row of the last cross-modality attention, read by a hook."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from lxrt.encoder import LXRTModel


class CrossAttentionProbe:
    """Records the attention of the language [CLS] over the regions in the last cross-modality layer.

    A forward pre-hook on that layer's cross-attention sub-layer recomputes the [CLS] row's scores
    from the inputs it is given (queries, keys, visual mask), with softmax, averaged over heads:
    ``weights`` (B, N). It fires where the layer runs as a module call, which is the case when the
    model computes the pooled output only (``pooled_only``, the task models' default).
    """

    def __init__(self, encoder: LXRTModel) -> None:
        layers = encoder.encoder.x_layers
        self.module = layers[-1].visual_attention if len(layers) else None
        self.weights: Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> CrossAttentionProbe:
        if self.module is not None:
            self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if exc[0] is None and self.module is not None and self.weights is None:
            raise RuntimeError("the last cross-modality layer did not run as a module call (pooled_only off?)")

    def _hook(self, module: nn.Module, args: tuple[Tensor, Tensor, Tensor | None]) -> None:
        lang, visn, mask = args
        att = module.att
        b, n = visn.shape[:2]
        q = att.query(lang[:, :1]).view(b, 1, att.num_heads, att.head_dim).transpose(1, 2)
        k = att.key(visn).view(b, n, att.num_heads, att.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(att.head_dim)
        if mask is not None:
            scores = scores + mask.float()
        self.weights = scores.softmax(-1).mean(1)[:, 0].detach().cpu()
