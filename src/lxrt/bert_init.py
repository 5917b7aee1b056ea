"""Initialize LXMERT from a BERT checkpoint, as the original did, and find that checkpoint.

Accepts a HuggingFace BERT folder (``config.json`` with ``model.safetensors`` or
``pytorch_model.bin``) or a bare weights file. ``load_bert_weights``: BERT's embeddings, its first
``llayers`` layers and its pooler go into an ``LXRTModel``; everything else keeps its initialization.
``load_bert_pretraining``: what the original's ``LXRTPretraining.from_pretrained("bert-base-uncased")``
takes (also the MLM and matching heads), or with ``--fromScratch`` only the MLM output bias.
``resolve_bert("bert-base-uncased")``: a local folder holding it, else the hub's files downloaded
into ``snap/bert/`` on first use (``lxrt.bert_hub`` pins them).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from .bert_hub import BERT_BASE_NAME, BERT_BASE_URL, BERT_URL_ENV, PYTORCH_BIN, SAFETENSORS, bert_files
from .checkpoint import CheckpointError, LoadReport, load_state, read_state_dict
from .config import LXRTConfig
from .fetch import DEFAULT_DEADLINE, DownloadError
from .fetch import download as fetch
from .fileio import describe_file

_CHECKED_FIELDS = (
    "vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)
_WEIGHT_FILES = (SAFETENSORS, PYTORCH_BIN, "pytorch_model.pth")
log = logging.getLogger(__name__)


@functools.cache
def safetensors_available() -> bool:
    """Whether the ``safetensors`` package imports (else ``model.safetensors`` cannot be read)."""
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def weight_files() -> tuple[str, ...]:
    """The weight file names this installation reads, in order of preference."""
    return _WEIGHT_FILES if safetensors_available() else _WEIGHT_FILES[1:]


def weights_in(folder: Path) -> Path | None:
    """The BERT weights file in ``folder`` this installation reads, or None."""
    return next((folder / n for n in weight_files() if (folder / n).is_file()), None)


def _find_weights(path: Path) -> tuple[Path, Path | None]:
    if path.is_file():
        config = path.parent / "config.json"
        return path, config if config.is_file() else None
    if not path.is_dir():
        raise CheckpointError(f"BERT checkpoint not found: {path}")
    weights = weights_in(path)
    if weights is not None:
        config = path / "config.json"
        return weights, config if config.is_file() else None
    if (path / SAFETENSORS).is_file():
        raise CheckpointError(f"{path / SAFETENSORS} needs the safetensors package (pip install safetensors); "
                              f"or put BERT's {PYTORCH_BIN} beside it")
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


class BertNotFoundError(CheckpointError):
    """BERT weights are not on disk and could not (or were not to) be downloaded. The message says
    which files to put in which folder and where they come from; ``folder`` is that folder and
    ``urls`` the files' URLs, for callers that add their own advice."""

    def __init__(self, message: str, folder: Path, urls: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.folder = folder
        self.urls = urls


def bert_folder_ready(path: Path) -> bool:
    """A folder holding BERT weights this installation reads (``model.safetensors``, ``pytorch_model.bin`` ...)."""
    return path.is_dir() and weights_in(path) is not None


def bert_search_folders(snap_root: str | os.PathLike[str] = "snap") -> tuple[Path, ...]:
    """Where ``bert-base-uncased`` is looked for, relative to the working directory as the original's
    data paths: ``<snap_root>/bert/bert-base-uncased`` (where it is downloaded to), then ``data/bert``."""
    return Path(snap_root) / "bert" / BERT_BASE_NAME, Path("data") / "bert"


def _not_found(folders: Sequence[Path], target: Path, base: str, names: Sequence[str], cause: str) -> str:
    looked = " or ".join(str(f) for f in folders) or str(target)
    return (
        f"BERT weights ({BERT_BASE_NAME}) are not in {looked} and {cause}. To provide them, put "
        f"{', '.join(names[:-1])} and {names[-1]} from {base.rstrip('/')}/ into {target}/, or set "
        f"${BERT_URL_ENV} to a mirror of that folder (http(s)://, s3://bucket/prefix or file:///dir), "
        "or start from random weights instead (--fromScratch)"
    )


def resolve_bert(
    name_or_path: str | os.PathLike[str] = BERT_BASE_NAME,
    search: Sequence[str | os.PathLike[str]] | None = None,
    download: bool = True,
    snap_root: str | os.PathLike[str] = "snap",
    base_url: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60,
    deadline: float | None = DEFAULT_DEADLINE,
) -> Path:
    """The BERT checkpoint to load: ``name_or_path`` itself when it is a folder with weights or a
    weights file; for ``bert-base-uncased`` the first of ``search`` (default ``bert_search_folders``)
    holding weights this installation reads, else -- with ``download`` -- the pinned hub files fetched
    into ``<snap_root>/bert/bert-base-uncased/`` (config, ``model.safetensors`` when the safetensors
    package imports, else ``pytorch_model.bin``, vocabulary; checked against their sizes and SHA-256).
    ``base_url`` (or ``$LXMERT_BERT_URL``) fetches from a mirror of the hub folder. A host that cannot
    be reached fails at once. Raises ``BertNotFoundError`` naming the files, the folder, the URLs,
    the mirror variable and ``--fromScratch``.
    """
    path = Path(name_or_path)
    if str(name_or_path) != BERT_BASE_NAME or bert_folder_ready(path):
        if path.is_file() or bert_folder_ready(path):
            return path
        if path.is_dir() and (path / SAFETENSORS).is_file():
            _find_weights(path)  # raises: the safetensors package is missing
        raise BertNotFoundError(
            f"{path}: no BERT weights there (looked for {', '.join(_WEIGHT_FILES)}); known names: {BERT_BASE_NAME}",
            path,
        )
    folders = tuple(map(Path, search)) if search is not None else bert_search_folders(snap_root)
    for folder in folders:
        if bert_folder_ready(folder):
            return folder
    target = Path(snap_root) / "bert" / BERT_BASE_NAME
    files = bert_files(SAFETENSORS if safetensors_available() else PYTORCH_BIN)
    base = (base_url or os.environ.get(BERT_URL_ENV) or BERT_BASE_URL).rstrip("/")
    urls = tuple(f"{base}/{f.name}" for f in files)
    names = [f.name for f in files]
    if not download:
        raise BertNotFoundError(_not_found(folders, target, base, names, "downloading was not asked for"),
                                target, urls)
    log.info(f"{BERT_BASE_NAME} is not in {target}: downloading it ({sum(f.size for f in files) / 1e6:.0f} MB)")
    try:
        for file, url in zip(files, urls):
            fetch(url, target / file.name, sha256=file.sha256, expected_size=file.size, progress=progress,
                  retries=retries, timeout=timeout, deadline=deadline)
    except DownloadError as err:
        raise BertNotFoundError(_not_found(folders, target, base, names, f"could not be downloaded: {err}"),
                                target, urls) from err
    return target
