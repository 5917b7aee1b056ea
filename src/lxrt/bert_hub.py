"""The BERT checkpoint LXMERT starts from: ``bert-base-uncased`` on the HuggingFace hub, pinned.

One table of files for whoever fetches it: ``lxrt.bert_init.resolve_bert`` on first use, and any
download manifest built on top of the library. Each file is pinned by hub revision, size and SHA-256.
Both weight formats are listed: ``model.safetensors`` where the ``safetensors`` package is installed,
``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``) where it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

BERT_BASE_NAME = "bert-base-uncased"
BERT_REPO = "google-bert/bert-base-uncased"
BERT_REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"
BERT_BASE_URL = f"https://huggingface.co/{BERT_REPO}/resolve/{BERT_REVISION}"
BERT_URL_ENV = "LXMERT_BERT_URL"
"""Environment variable naming a mirror of the hub folder (http(s)://, s3://bucket/prefix, file:///dir)."""

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"


@dataclass(frozen=True)
class BertFile:
    """One file of the hub folder: its name there (and locally), size in bytes and SHA-256."""

    name: str
    size: int
    sha256: str


BERT_FILES: tuple[BertFile, ...] = (
    BertFile("config.json", 570, "7160e1553ad2ca51d8c1cb066be533db31826e12d173824c1bb0cb1a4f187d20"),
    BertFile(SAFETENSORS, 440449768, "68d45e234eb4a928074dfd868cead0219ab85354cc53d20e772753c6bb9169d3"),
    BertFile(PYTORCH_BIN, 440473133, "097417381d6c7230bd9e3557456d726de6e83245ec8b24f529f60198a67b203a"),
    BertFile("vocab.txt", 231508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
)
WEIGHT_FILES = (SAFETENSORS, PYTORCH_BIN)


def bert_files(weights: str = SAFETENSORS) -> tuple[BertFile, ...]:
    """The files a usable folder needs: the config, the ``weights`` file of that format, the vocabulary."""
    if weights not in WEIGHT_FILES:
        raise ValueError(f"unknown BERT weights file {weights!r}; expected one of {', '.join(WEIGHT_FILES)}")
    return tuple(f for f in BERT_FILES if f.name not in WEIGHT_FILES or f.name == weights)
