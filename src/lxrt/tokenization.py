"""The original code's ``lxrt.tokenization``: ``BertTokenizer`` over this package's ``LXRTTokenizer``.

``BertTokenizer.from_pretrained("bert-base-uncased")`` reads the vocabulary shipped in this package
(the same file the original downloads), so no network is needed. ``PRETRAINED_VOCAB_ARCHIVE_MAP`` is
honoured as the original honours it: a fork that points a name at a local file or folder gets that
file, and one that points it at another URL gets that URL's vocabulary (downloaded once into
``cache_dir``, default ``snap/bert/``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

from .tokenizer import DEFAULT_VOCAB_PATH, SPECIAL_TOKENS, LXRTTokenizer, VocabError, load_vocab

_S3 = "https://s3.amazonaws.com/models.huggingface.co/bert"
PRETRAINED_VOCAB_ARCHIVE_MAP: dict[str, str] = {
    "bert-base-uncased": f"{_S3}/bert-base-uncased-vocab.txt",
    "bert-large-uncased": f"{_S3}/bert-large-uncased-vocab.txt",
    "bert-base-cased": f"{_S3}/bert-base-cased-vocab.txt",
    "bert-large-cased": f"{_S3}/bert-large-cased-vocab.txt",
    "bert-base-multilingual-uncased": f"{_S3}/bert-base-multilingual-uncased-vocab.txt",
    "bert-base-multilingual-cased": f"{_S3}/bert-base-multilingual-cased-vocab.txt",
    "bert-base-chinese": f"{_S3}/bert-base-chinese-vocab.txt",
}
"""Name -> vocabulary location, the original's table; entries may be changed to a path or URL."""
PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP: dict[str, int] = dict.fromkeys(PRETRAINED_VOCAB_ARCHIVE_MAP, 512)
SHIPPED_VOCABS: dict[str, Path] = {PRETRAINED_VOCAB_ARCHIVE_MAP["bert-base-uncased"]: DEFAULT_VOCAB_PATH}
"""URLs whose content ships in this package (the uncased vocabulary LXMERT uses)."""
VOCAB_NAME = "vocab.txt"
DEFAULT_CACHE = Path("snap") / "bert"

__all__ = [
    "PRETRAINED_VOCAB_ARCHIVE_MAP", "PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP", "VOCAB_NAME", "BertTokenizer",
    "VocabError", "load_vocab",
]  # fmt: skip


def resolve_vocab(location: str, cache_dir: str | Path | None = None) -> Path:
    """The vocabulary file ``location`` names: the shipped copy of a known URL, a downloaded copy of
    another URL, a folder's ``vocab.txt``, or the file itself."""
    if location in SHIPPED_VOCABS:
        return SHIPPED_VOCABS[location]
    if location.startswith(("http://", "https://", "s3://", "file://")):
        from .fetch import download  # only a vocabulary at an unknown URL needs the network

        digest = hashlib.sha256(location.encode("utf-8")).hexdigest()[:12]
        name = location.rstrip("/").rsplit("/", 1)[-1] or VOCAB_NAME
        target = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        return download(location, target / f"{digest}-{name}")
    path = Path(location)
    return path / VOCAB_NAME if path.is_dir() else path


class BertTokenizer(LXRTTokenizer):
    """``LXRTTokenizer`` with the original's constructor and ``from_pretrained``.

    Only what the original uses with LXMERT is available: uncased (``do_lower_case=True``) basic +
    WordPiece tokenization with the standard special tokens.
    """

    def __init__(
        self,
        vocab_file: str | Path,
        do_lower_case: bool = True,
        max_len: int | None = None,
        do_basic_tokenize: bool = True,
        never_split: Sequence[str] = SPECIAL_TOKENS,
    ) -> None:
        if not do_lower_case or not do_basic_tokenize or tuple(never_split) != SPECIAL_TOKENS:
            raise ValueError(
                "only the uncased BERT tokenizer is available (do_lower_case=True, do_basic_tokenize=True, "
                f"never_split={SPECIAL_TOKENS})"
            )
        if not Path(vocab_file).is_file():
            raise ValueError(f"Can't find a vocabulary file at path '{vocab_file}'")
        super().__init__(vocab_file)
        self.max_len = max_len if max_len is not None else int(1e12)

    def __reduce__(self) -> tuple[type, tuple[Path, bool, int]]:
        return (type(self), (self.vocab_path, True, self.max_len))

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        ids = super().convert_tokens_to_ids(tokens)
        if len(ids) > self.max_len:
            warnings.warn(
                f"Token indices sequence length is longer than the specified maximum sequence length for this "
                f"BERT model ({len(ids)} > {self.max_len}). Running this sequence through BERT will result in "
                "indexing errors",
                stacklevel=2,
            )
        return ids

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, cache_dir: str | None = None, *inputs, **kwargs
    ) -> BertTokenizer:
        """A name of ``PRETRAINED_VOCAB_ARCHIVE_MAP`` (looked up at call time, so changes to the table
        count), a folder holding ``vocab.txt``, a vocabulary file or a URL."""
        name = str(pretrained_model_name_or_path)
        vocab_file = resolve_vocab(PRETRAINED_VOCAB_ARCHIVE_MAP.get(name, name), cache_dir)
        if name in PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP:
            limit = PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP[name]
            kwargs["max_len"] = min(kwargs.get("max_len") or int(1e12), limit)
        return cls(vocab_file, *inputs, **kwargs)
