"""The batch every task's collate returns and the training loop moves to the device in one call."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """Model inputs for B (sentence, image) pairs plus task targets.

    Text: ``input_ids``, ``attention_mask`` (1 real / 0 pad), ``token_type_ids``, each (B, L) int64.
    Vision: ``feats`` (B, N, D) float (fp16 or fp32 from the store), ``boxes`` (B, N, 4) float32
    normalized to [0, 1], ``visual_mask`` (B, N) 1/0 or ``None`` when every image has N regions.
    ``targets`` holds task tensors (soft VQA scores, NLVR2 labels, pretraining masks and labels);
    ``ids`` holds one identifier per *example* (question id, NLVR2 identifier, pretraining uid) and
    stays on the CPU. NLVR2 batches hold 2 pairs per example (rows 2i and 2i+1), so
    ``len(ids) == B // 2`` there.
    """

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    feats: Tensor
    boxes: Tensor
    visual_mask: Tensor | None = None
    targets: dict[str, Tensor] = field(default_factory=dict)
    ids: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of examples (not of sentence-image pairs)."""
        return len(self.ids) if self.ids else int(self.input_ids.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``; ``ids`` stay as they are."""

        def move(x: Any) -> Any:
            return x.to(device, non_blocking=non_blocking) if isinstance(x, Tensor) else x

        out = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name not in ("targets", "ids")}
        return Batch(**out, targets={k: move(v) for k, v in self.targets.items()}, ids=self.ids)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` so host-to-device copies can overlap compute."""

        def pin(x: Any) -> Any:
            return x.pin_memory() if isinstance(x, Tensor) else x

        out = {f.name: pin(getattr(self, f.name)) for f in fields(self) if f.name not in ("targets", "ids")}
        return Batch(**out, targets={k: pin(v) for k, v in self.targets.items()}, ids=self.ids)
