"""The original code's ``lxrt.modeling``, as a thin layer over this package's encoder and heads.

``from lxrt.modeling import LXRTPretraining, VISUAL_CONFIG, BertConfig, GeLU, BertLayerNorm`` works
as in the original. The classes build the same modules as the native ``lxrt.encoder.LXRTModel`` /
``lxrt.models.LXMERTForPretraining`` (same state-dict keys); only the constructor arguments, the
forward signatures and return values are the original's. Layer counts and visual sizes come from
the module-level ``VISUAL_CONFIG`` (set by ``lxrt.entry.set_visual_config(args)``), text sizes from a
``BertConfig``, exactly as in the original. New code uses the native classes.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bert_init
from .checkpoint import CheckpointError, CheckpointShapeError, read_state_dict
from .config import LXRTConfig
from .encoder import GeLU, LXRTModel, init_bert_weights
from .heads import BertPreTrainingHeads, BertVisualAnswerHead, BertVisualObjHead

BertLayerNorm = nn.LayerNorm
"""The original's LayerNorm name (its task heads use it)."""


def gelu(x: Tensor) -> Tensor:
    """Exact GeLU as a function (the original's ``gelu``)."""
    return F.gelu(x)


__all__ = [
    "VISUAL_CONFIG", "BertConfig", "BertLayerNorm", "BertPreTrainedModel", "GeLU", "LXRTFeatureExtraction",
    "LXRTPretraining", "VisualConfig", "gelu",
]


# --------------------------------------------------------------------------------------------------
# Where ``from_pretrained("bert-base-uncased")`` finds BERT: a local copy, else the download on first
# use into ``snap/bert/bert-base-uncased/`` (``lxrt.bert_init.resolve_bert``, the one resolver), as the original
# downloads it.

BERT_DIRS: dict[str, tuple[str, ...]] = {"bert-base-uncased": ("snap/bert/bert-base-uncased", "data/bert")}
BERT_CONFIG_FILES = ("bert_config.json", "config.json")
BERT_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")


def bert_folder(name_or_path: str | os.PathLike) -> Path | None:
    """Where ``from_pretrained`` finds BERT ``name_or_path``: ``lxrt.bert_init.resolve_bert`` over a known
    name's folders (relative to the working directory, as the original's data paths), downloaded on
    first use, or the path itself. A known name whose folder holds only a BERT config gives that
    folder (the model takes its sizes and keeps its random weights); None if there is neither a copy
    nor a way to fetch one (the reason is printed, as the original prints it)."""
    name = str(name_or_path)
    if name not in BERT_DIRS and not Path(name).exists():
        raise FileNotFoundError(f"BERT model {name!r}: no such folder or file (known names: {', '.join(BERT_DIRS)})")
    try:
        return bert_init.resolve_bert(name, search=BERT_DIRS.get(name))
    except bert_init.BertNotFoundError as err:
        if name not in BERT_DIRS:
            raise
        print(f"Warning: {err}", file=sys.stderr)
        configured = [Path(d) for d in BERT_DIRS[name] if any((Path(d) / f).is_file() for f in BERT_CONFIG_FILES)]
        return configured[0] if configured else None


# --------------------------------------------------------------------------------------------------
# Configuration


class VisualConfig:
    """The original's global visual settings: layer counts, feature sizes and visual losses."""

    VISUAL_LOSSES = ["obj", "attr", "feat"]

    def __init__(self, l_layers: int = 12, x_layers: int = 5, r_layers: int = 0) -> None:
        self.l_layers = l_layers
        self.x_layers = x_layers
        self.r_layers = r_layers
        self.visual_feat_dim = 2048
        self.visual_pos_dim = 4
        self.obj_id_num = 1600
        self.attr_id_num = 400
        self.visual_losses = self.VISUAL_LOSSES
        # name -> (output dim, loss kind, label shape, weight)
        self.visual_loss_config = {
            "obj": (self.obj_id_num, "ce", (-1,), 1 / 0.15),
            "attr": (self.attr_id_num, "ce", (-1,), 1 / 0.15),
            "feat": (self.visual_feat_dim, "l2", (-1, self.visual_feat_dim), 1 / 0.15),
        }

    def set_visual_dims(self, feat_dim: int, pos_dim: int) -> None:
        self.visual_feat_dim = feat_dim
        self.visual_pos_dim = pos_dim
        # The feature-regression target follows the feature width.
        self.visual_loss_config["feat"] = (feat_dim, "l2", (-1, feat_dim), 1 / 0.15)


VISUAL_CONFIG = VisualConfig()


class BertConfig:
    """BERT text-side sizes: from a vocabulary size and keywords, or from a JSON file."""

    def __init__(
        self,
        vocab_size_or_config_json_file: int | str,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
    ) -> None:
        if isinstance(vocab_size_or_config_json_file, str):
            with open(vocab_size_or_config_json_file, encoding="utf-8") as f:
                self.__dict__.update(json.load(f))
        elif isinstance(vocab_size_or_config_json_file, int):
            self.vocab_size = vocab_size_or_config_json_file
            self.hidden_size = hidden_size
            self.num_hidden_layers = num_hidden_layers
            self.num_attention_heads = num_attention_heads
            self.hidden_act = hidden_act
            self.intermediate_size = intermediate_size
            self.hidden_dropout_prob = hidden_dropout_prob
            self.attention_probs_dropout_prob = attention_probs_dropout_prob
            self.max_position_embeddings = max_position_embeddings
            self.type_vocab_size = type_vocab_size
            self.initializer_range = initializer_range
        else:
            raise ValueError(
                "First argument must be either a vocabulary size (int) or the path to a BERT config file (str)"
            )

    @classmethod
    def from_dict(cls, json_object: dict[str, Any]) -> BertConfig:
        config = cls(vocab_size_or_config_json_file=-1)
        config.__dict__.update(json_object)
        return config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> BertConfig:
        try:
            with open(json_file, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except json.JSONDecodeError as err:
            raise ValueError(f"{json_file}: malformed JSON ({err})") from None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return self.to_json_string()


def lxrt_config(config: BertConfig, num_answers: int | None = None) -> LXRTConfig:
    """The ``LXRTConfig`` that ``config`` and the current ``VISUAL_CONFIG`` describe."""
    act = getattr(config, "hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act {act!r} is not supported; LXMERT uses 'gelu'")
    extra = {} if num_answers is None else {"num_qa_labels": int(num_answers)}
    return LXRTConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        initializer_range=config.initializer_range,
        llayers=VISUAL_CONFIG.l_layers,
        xlayers=VISUAL_CONFIG.x_layers,
        rlayers=VISUAL_CONFIG.r_layers,
        visual_feat_dim=VISUAL_CONFIG.visual_feat_dim,
        visual_pos_dim=VISUAL_CONFIG.visual_pos_dim,
        num_object_labels=VISUAL_CONFIG.obj_id_num,
        num_attr_labels=VISUAL_CONFIG.attr_id_num,
        **extra,
    )


# --------------------------------------------------------------------------------------------------
# Models


def _bert_state(folder: Path, weights_file: Path | None = None) -> tuple[dict[str, Tensor], Path] | None:
    """BERT's tensors (TensorFlow-style ``gamma``/``beta`` renamed) and the file they came from."""
    candidates = [weights_file] if weights_file is not None else [folder / name for name in BERT_WEIGHT_FILES]
    for path in candidates:
        if path.is_file():
            state = read_state_dict(path)
            return {k.replace("gamma", "weight").replace("beta", "bias"): v for k, v in state.items()}, path
    return None


def _mean_ce(scores: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the labels that are not -1; 0 when there are none (not NaN)."""
    keep = labels != -1
    if not bool(keep.any()):
        return scores.sum() * 0.0
    return F.cross_entropy(scores[keep], labels[keep])


class BertPreTrainedModel(nn.Module):
    """Base of the original's models: holds a ``BertConfig``; ``init_bert_weights``; ``from_pretrained``."""

    def __init__(self, config: BertConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise ValueError(
                f"Parameter config in `{type(self).__name__}(config)` should be an instance of class `BertConfig`. "
                f"To create a model from a pretrained model use `{type(self).__name__}.from_pretrained(NAME)`"
            )
        self.config = config

    def init_bert_weights(self, module: nn.Module) -> None:
        """The original initialization with the config's ``initializer_range``; use with ``apply``."""
        init_bert_weights(module, std=self.config.initializer_range)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        state_dict: dict[str, Tensor] | None = None,
        cache_dir: str | None = None,
        from_tf: bool = False,
        *inputs: Any,
        **kwargs: Any,
    ) -> BertPreTrainedModel:
        """Build the model with the BERT config of ``pretrained_model_name_or_path`` and copy every
        BERT weight whose name the model has (embeddings, the first ``l_layers`` layers, pooler and,
        for pretraining, the LM/matching heads); a BERT weight of another shape is an error.

        ``"bert-base-uncased"`` is looked up with ``bert_folder``; without a local copy the model
        has BERT-base sizes and keeps its random initialization (with a warning).
        """
        if from_tf:
            raise ValueError("from_tf is not supported: convert the TensorFlow checkpoint to PyTorch first")
        name = str(pretrained_model_name_or_path)
        folder = bert_folder(name)
        weights_file = None
        if folder is not None and folder.is_file():  # a weights file; its config sits next to it
            weights_file, folder = folder, folder.parent
        config_file = next((folder / f for f in BERT_CONFIG_FILES if (folder / f).is_file()), None) if folder else None
        if config_file is not None:
            config = BertConfig.from_json_file(config_file)
        elif name in BERT_DIRS:
            config = BertConfig(30522)  # BERT-base-uncased's sizes
        else:
            raise FileNotFoundError(f"{folder}: no BERT config ({' or '.join(BERT_CONFIG_FILES)})")
        model = cls(config, *inputs, **kwargs)
        source = "<state_dict>"
        if state_dict is None:
            found = _bert_state(folder, weights_file) if folder is not None else None
            if found is None:
                looked = ", ".join(BERT_DIRS.get(name, (name,)))
                print(
                    f"Warning: no BERT weights for {name} (looked in {looked}); the model keeps its random init",
                    file=sys.stderr,
                )
                return model
            state_dict, path = found
            source = str(path)
        own = model.state_dict()
        prefix = "bert." if not hasattr(model, "bert") and any(k.startswith("bert.") for k in state_dict) else ""
        picked = {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            target = key[len(prefix):]
            if target in own:
                if tuple(own[target].shape) != tuple(value.shape):
                    raise CheckpointShapeError(
                        f"{source}: {key!r} has shape {tuple(value.shape)}, the model's {target!r} has "
                        f"{tuple(own[target].shape)}"
                    )
                picked[target] = value
        if not picked:
            raise CheckpointError(f"{source}: no weight matches the model (is this a BERT checkpoint?)")
        model.load_state_dict(picked, strict=False)
        print(f"Loaded {len(picked)} of the model's {len(own)} tensors from BERT ({source})", file=sys.stderr)
        return model


class LXRTFeatureExtraction(BertPreTrainedModel):
    """The encoder for fine-tuning; ``mode`` picks the outputs: 'x' pooled, 'l'/'r'/'lr' the
    (language, vision) sequences, 'lx'/'rx'/'lxr' both as ``((lang, visn), pooled)``."""

    def __init__(self, config: BertConfig, mode: str = "lxr") -> None:
        super().__init__(config)
        self.bert = LXRTModel(lxrt_config(config))
        self.mode = mode
        self.apply(self.init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        visual_feats: tuple[Tensor, Tensor] | None = None,
        visual_attention_mask: Tensor | None = None,
    ) -> Any:
        if visual_feats is None:
            raise ValueError("visual_feats=(features, boxes) is required")
        feats, boxes = visual_feats
        pooled_only = self.mode == "x"
        out = self.bert(
            input_ids, feats, boxes, attention_mask, token_type_ids, visual_attention_mask, pooled_only=pooled_only
        )
        if pooled_only:
            return out.pooled
        if "x" in self.mode and ("l" in self.mode or "r" in self.mode):
            return (out.lang, out.visn), out.pooled
        if "l" in self.mode or "r" in self.mode:
            return out.lang, out.visn
        return None  # any other mode string, as the original


class LXRTPretraining(BertPreTrainedModel):
    """Encoder + masked-LM, matching, masked-object and QA heads; ``forward`` returns the losses.

    ``visual_losses`` is the comma-separated ``--visualLosses`` string (e.g. ``"obj,attr,feat"``).
    """

    def __init__(
        self,
        config: BertConfig,
        task_mask_lm: bool = True,
        task_matched: bool = True,
        task_obj_predict: bool = True,
        visual_losses: str = "",
        task_qa: bool = True,
        num_answers: int = 2,
    ) -> None:
        super().__init__(config)
        self.num_answers = num_answers
        self.task_mask_lm = task_mask_lm
        self.task_obj_predict = task_obj_predict
        self.task_matched = task_matched
        self.task_qa = task_qa
        cfg = lxrt_config(config, num_answers)
        self.bert = LXRTModel(cfg)
        self.cls = BertPreTrainingHeads(cfg, self.bert.embeddings.word_embeddings)
        if task_obj_predict:
            losses = visual_losses.split(",") if isinstance(visual_losses, str) else list(visual_losses)
            self.obj_predict_head = BertVisualObjHead(cfg, losses)
        if task_qa:
            self.answer_head = BertVisualAnswerHead(cfg, num_answers)
        self.apply(self.init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        masked_lm_labels: Tensor | None = None,
        visual_feats: Tensor | None = None,
        pos: Tensor | None = None,
        obj_labels: dict[str, tuple[Tensor, Tensor]] | None = None,
        matched_label: Tensor | None = None,
        ans: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(total loss, (1, n) stack of the computed losses, answer scores)``; -1 marks no target.

        Losses, in this order when their targets are given: Mask_LM, Matched, the visual losses
        (Obj, Attr, Feat: confidence- or mask-weighted mean over every region, x 1/0.15), QA. A
        loss whose targets are all -1 in the batch is 0 (the original's would be NaN).
        """
        out = self.bert(input_ids, visual_feats, pos, attention_mask, token_type_ids)
        answer_score = self.answer_head(out.pooled) if self.task_qa else out.pooled[0][0]
        total: Tensor | float = 0.0  # summed in the original's order
        losses: list[Tensor] = []
        if masked_lm_labels is not None and self.task_mask_lm:
            # The vocabulary projection only for the labelled tokens: the same mean cross-entropy.
            keep = masked_lm_labels != -1
            loss = _mean_ce(self.cls.predictions(out.lang[keep]), masked_lm_labels[keep])
            total = total + loss
            losses.append(loss)
        if matched_label is not None and self.task_matched:
            match_score = self.cls.seq_relationship(out.pooled)
            loss = _mean_ce(match_score.view(-1, 2), matched_label.view(-1))
            total = total + loss
            losses.append(loss)
        if obj_labels is not None and self.task_obj_predict:
            scores = self.obj_predict_head(out.visn)
            visual: Tensor | float = 0.0
            for key in VISUAL_CONFIG.visual_losses:
                if key not in scores:
                    continue
                label, mask_conf = obj_labels[key]
                dim, kind, shape, weight = VISUAL_CONFIG.visual_loss_config[key]
                flat = scores[key].view(-1, dim)
                if kind == "ce":
                    loss = F.cross_entropy(flat, label.view(*shape), ignore_index=-1, reduction="none")
                else:
                    loss = F.smooth_l1_loss(flat, label.view(*shape), reduction="none").mean(1)
                loss = (loss * mask_conf.view(-1)).mean() * weight
                visual = visual + loss
                losses.append(loss)
            total = total + visual
        if ans is not None and self.task_qa:
            loss = _mean_ce(answer_score.view(-1, self.num_answers), ans.view(-1))
            total = total + loss
            losses.append(loss)
        if not losses:
            raise ValueError("no loss to compute: give the targets of at least one enabled task")
        return total, torch.stack([loss.detach() for loss in losses]).unsqueeze(0), answer_score.detach()
