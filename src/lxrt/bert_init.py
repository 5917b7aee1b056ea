"""Initialize LXMERT from a BERT checkpoint, as the original did, and find that checkpoint.

Accepts a HuggingFace BERT folder (``config.json`` with ``pytorch_model.bin`` or
``model.safetensors``) or a bare weights file. ``load_bert_weights``: BERT's embeddings, its first
``llayers`` layers and its pooler go into an ``LXRTModel``; everything else keeps its initialization.
``load_bert_pretraining``: what the original's ``LXRTPretraining.from_pretrained("bert-base-uncased")``
takes (also the MLM and matching heads), or with ``--fromScratch`` only the MLM output bias.
``resolve_bert("bert-base-uncased")``: the local folder, downloaded into ``snap/bert/`` on first use.
"""

from __future__ import annotations

import json
import logging
import os
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
log = logging.getLogger(__name__)


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


# ---- the original's pretraining start -----------------------------------------------------------------

HEAD_PREFIXES = ("cls.predictions.transform.", "cls.seq_relationship.")
MLM_BIAS = "cls.predictions.bias"


def _renamed(state: dict) -> dict:
    return {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in state.items()}


def load_bert_pretraining(model: nn.Module, path: str | Path, from_scratch: bool = False) -> LoadReport:
    """Start an ``LXMERTForPretraining`` where the original's pretraining starts, from a BERT checkpoint
    with its pretraining heads (``BertForPreTraining``, as ``bert-base-uncased``).

    Without ``from_scratch``: BERT's embeddings, first ``llayers`` layers and pooler, the MLM head's
    transform and output bias (``cls.predictions.transform.*``, ``cls.predictions.bias``; the decoder is
    the tied word embedding) and the matching head (``cls.seq_relationship.*``). With ``from_scratch``
    only ``cls.predictions.bias``: the original re-draws every Linear, Embedding and LayerNorm after
    loading BERT, and that bare parameter is none of them.
    """
    weights, config_path = _find_weights(Path(path))
    config: LXRTConfig = model.config
    if config_path is not None and not from_scratch:  # from scratch only the bias's shape has to fit
        check_bert_config(config_path, config)
    raw = _renamed(read_state_dict(weights))
    state = {}
    if MLM_BIAS in raw:
        state[MLM_BIAS] = raw[MLM_BIAS]
    if not from_scratch:
        for k, v in raw.items():
            new = bert_to_lxrt_keys(k, config.llayers)
            if new is not None:
                state["bert." + new] = v
            elif k.startswith(HEAD_PREFIXES):
                state[k] = v
        if not any(k.startswith("bert.encoder.layer.") for k in state):
            raise CheckpointError(f"{weights}: no BERT encoder layers found (is this a BERT checkpoint?)")
    if not state:
        raise CheckpointError(f"{weights}: no {MLM_BIAS} (a BERT checkpoint with its pretraining heads is needed)")
    report = load_state(model, state, strict=False, source=str(weights))
    loaded = [k for k in state if k not in report.unexpected]
    log.info(f"from BERT ({weights}{', --fromScratch' if from_scratch else ''}): {bert_parts(loaded)} "
             f"({report.loaded} tensors); every other weight keeps its initialization")
    return report


def bert_parts(keys: list[str]) -> str:
    """``embeddings, language layers 0-8, pooler, cls.predictions.bias, ...`` for a list of loaded keys."""
    groups: dict[str, None] = {}
    layers = {int(k.split(".")[3]) for k in keys if k.startswith("bert.encoder.layer.")}
    for key in sorted(keys):
        parts = key.split(".")
        if key.startswith("bert.encoder.layer."):
            name = f"language layers 0-{max(layers)}"
        elif key.startswith("bert."):
            name = parts[1]
        elif key.startswith("cls.predictions.transform."):
            name = "cls.predictions.transform"
        else:
            name = ".".join(parts[:2]) if parts[1] == "seq_relationship" else key
        groups.setdefault(name, None)
    return ", ".join(groups)


# ---- finding the weights ------------------------------------------------------------------------------

BERT_BASE_NAME = "bert-base-uncased"
BERT_URL_ENV = "LXMERT_BERT_URL"  # a mirror of the hub folder (http(s)://, s3://, file://)


def bert_folder_ready(path: Path) -> bool:
    """A folder holding BERT weights (``model.safetensors``, ``pytorch_model.bin`` ...)."""
    return path.is_dir() and any((path / n).is_file() for n in _WEIGHT_FILES)


def resolve_bert(
    name_or_path: str | Path = BERT_BASE_NAME,
    snap_root: str | Path = "snap",
    download: bool = True,
    base_url: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60,
) -> Path:
    """The folder of a BERT checkpoint: ``name_or_path`` itself when it is a folder, else for
    ``bert-base-uncased`` ``<snap_root>/bert/bert-base-uncased/``, downloaded there from the HuggingFace
    hub on first use (config, ``model.safetensors``, vocabulary; checked against their sizes and
    SHA-256, with a progress bar). ``base_url`` (or ``$LXMERT_BERT_URL``) fetches from a mirror instead.
    Raises ``CheckpointError`` saying what to do when the folder is missing and cannot be fetched.
    """
    path = Path(name_or_path)
    if str(name_or_path) != BERT_BASE_NAME or path.is_dir():
        if bert_folder_ready(path):
            return path
        raise CheckpointError(
            f"{path}: no BERT weights there (looked for {', '.join(_WEIGHT_FILES)}); known names: {BERT_BASE_NAME}"
        )
    folder = Path(snap_root) / "bert" / BERT_BASE_NAME
    if bert_folder_ready(folder) and (folder / "config.json").is_file():
        return folder
    if not download:
        raise CheckpointError(f"no BERT weights in {folder} (bash run/download_data.bash bert fetches them)")
    from datatools import download as dl  # the library only needs the network here
    from datatools import sources

    entries = sources.select(["bert"], sources.SOURCES)
    cfg = dl.FetchConfig(snap_root=Path(snap_root), base_url=base_url or os.environ.get(BERT_URL_ENV) or None,
                         retries=retries, timeout=timeout, progress=progress)
    total = sum(e.size or 0 for e in entries) / 1e6
    log.info(f"{BERT_BASE_NAME} is not in {folder}: downloading it ({total:.0f} MB)")
    try:
        for entry in entries:
            dl.fetch_source(entry, cfg)
    except dl.DownloadError as err:
        raise CheckpointError(
            f"BERT weights are needed in {folder} and could not be downloaded: {err}. Fetch them where there "
            f"is network (bash run/download_data.bash bert) and copy the folder here, set ${BERT_URL_ENV} to a "
            "mirror, pass --bert PATH to a local BERT folder, or --fromScratch to start without BERT."
        ) from err
    return folder
