"""The original code's fine-tuning entry point, ``lxrt.entry``, on this package's encoder and tokenizer.

``LXRTEncoder(args, max_seq_length, mode)`` tokenizes a batch of sentences and encodes them with
their images: the module every original task model (VQA, GQA, NLVR2) is built around. Its state
dict is the original's (``model.bert.*``), and the token ids go to the device of the features.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .checkpoint import CheckpointError, load_state, read_state_dict, save_state_dict
from .modeling import VISUAL_CONFIG, LXRTFeatureExtraction
from .tokenization import BertTokenizer

__all__ = ["InputFeatures", "LXRTEncoder", "convert_sents_to_features", "set_visual_config"]


class InputFeatures:
    """One sentence as fixed-length lists: token ids, attention mask, segment ids."""

    def __init__(self, input_ids: list[int], input_mask: list[int], segment_ids: list[int]) -> None:
        self.input_ids = input_ids
        self.input_mask = input_mask
        self.segment_ids = segment_ids


def convert_sents_to_features(sents: Sequence[str], max_seq_length: int, tokenizer: Any) -> list[InputFeatures]:
    """``[CLS] + first max_seq_length-2 wordpieces + [SEP]``, zero-padded, for each sentence.

    ``tokenizer`` needs ``tokenize`` and ``convert_tokens_to_ids`` (any BERT tokenizer).
    """
    features = []
    for sent in sents:
        tokens = tokenizer.tokenize(sent.strip())[: max_seq_length - 2]
        ids = tokenizer.convert_tokens_to_ids(["[CLS]", *tokens, "[SEP]"])
        pad = [0] * (max_seq_length - len(ids))
        features.append(InputFeatures(ids + pad, [1] * len(ids) + pad, [0] * max_seq_length))
    return features


def set_visual_config(args: Any) -> None:
    """Layer counts from the original's ``--llayers/--xlayers/--rlayers`` into ``VISUAL_CONFIG``."""
    VISUAL_CONFIG.l_layers = args.llayers
    VISUAL_CONFIG.x_layers = args.xlayers
    VISUAL_CONFIG.r_layers = args.rlayers


class LXRTEncoder(nn.Module):
    """Sentences + ``(features, boxes)`` -> the outputs ``mode`` selects (see ``LXRTFeatureExtraction``).

    Built as the original: layer counts from ``args``, BERT-base sizes and weights through
    ``from_pretrained("bert-base-uncased")``, everything re-initialized with ``args.from_scratch``.
    """

    def __init__(self, args: Any, max_seq_length: int, mode: str = "x") -> None:
        super().__init__()
        self.max_seq_length = max_seq_length
        set_visual_config(args)
        self.tokenizer = BertTokenizer.from_pretrained("bert-base-uncased", do_lower_case=True)
        self.model = LXRTFeatureExtraction.from_pretrained("bert-base-uncased", mode=mode)
        if getattr(args, "from_scratch", False):
            print("initializing all the weights")
            self.model.apply(self.model.init_bert_weights)
        self._dim = self.model.config.hidden_size

    def multi_gpu(self) -> None:
        """Replicate the encoder over the visible GPUs with ``nn.DataParallel``, as the original.
        (The project's own commands use one process per GPU through torchrun instead.)"""
        self.model = nn.DataParallel(self.model)

    @property
    def dim(self) -> int:
        return self._dim

    def _unwrapped(self) -> nn.Module:
        return self.model.module if isinstance(self.model, nn.DataParallel) else self.model

    def forward(
        self, sents: Sequence[str], feats: tuple[Tensor, Tensor], visual_attention_mask: Tensor | None = None
    ) -> Any:
        batch = self.tokenizer(list(sents), max_length=self.max_seq_length)
        device = feats[0].device
        return self.model(
            batch.input_ids.to(device),
            batch.token_type_ids.to(device),
            batch.attention_mask.to(device),
            visual_feats=feats,
            visual_attention_mask=visual_attention_mask,
        )

    def save(self, path: str) -> None:
        """``<path>_LXRT.pth``, keys ``bert.*`` (written atomically)."""
        save_state_dict(self.model.state_dict(), f"{path}_LXRT.pth")

    def load(self, path: str) -> None:
        """The encoder from ``<path>_LXRT.pth`` (a pretraining or encoder snapshot); other keys are
        listed and skipped. A file without any of the encoder's weights is an error."""
        file = Path(f"{path}_LXRT.pth")
        print(f"Load LXMERT pre-trained model from {path}")
        state = read_state_dict(file)
        model = self._unwrapped()
        own = set(model.state_dict())
        print("\nWeights in loaded but not in model:")
        for key in sorted(set(state) - own):
            print(key)
        print("\nWeights in model but not in loaded:")
        for key in sorted(own - set(state)):
            print(key)
        print()
        if not own & set(state):
            raise CheckpointError(f"{file}: none of the encoder's weights (bert.*) are in the file")
        report = load_state(model, state, strict=False, source=str(file))
        print(f"Loaded {report.loaded} of the encoder's {len(own)} tensors from {file}", file=sys.stderr)
