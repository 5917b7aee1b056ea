"""BERT uncased WordPiece tokenization, as the original LXMERT feeds sentences to the model.

The rules (clean text, space out CJK ideographs, lowercase + strip accents except in whole-word special
tokens such as ``[MASK]``, split off punctuation, greedy longest-match WordPiece with ``##``
continuations, ``[UNK]`` for words that cannot be matched or are longer than 100 characters) run in the
Rust ``tokenizers`` library when it is installed (for plain ASCII text wholly, otherwise from the
words on), and in plain Python otherwise, with the same ids (see ``LXRTTokenizer``). The BERT
uncased vocabulary ships inside this package.

Sentences become fixed-length rows ``[CLS] + first max_length-2 wordpieces + [SEP]``, right-padded
with 0, token types 0 (the original's ``convert_sents_to_features``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # the fast path; optional, so that a copy of this package needs no extra dependency
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
except ImportError:  # pragma: no cover - exercised by the vendored-package test
    Tokenizer = None

DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "vocab" / "bert-base-uncased-vocab.txt"
"""The BERT uncased vocabulary (30522 tokens), shipped as package data."""
# The original BasicTokenizer's ``never_split`` list.
SPECIAL_TOKENS: tuple[str, ...] = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
MAX_WORD_CHARS = 100
DEFAULT_MAX_LENGTH = 20


# The original's CJK blocks. The Rust normalizer mistypes one bound (0x2B920 for 0x2B820).
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(c: str) -> bool:
    """ASCII symbols count as punctuation too (``$``, ``^``, backtick...), as in the original."""
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c)[0] == "P"


def basic_words(text: str) -> list[str]:
    """The original BasicTokenizer in Python: the words WordPiece is applied to.

    Drops NUL, U+FFFD and control/format/unassigned characters, maps whitespace to spaces, spaces
    out CJK ideographs, then per whitespace-separated word that is not a special token: lowercase,
    NFD, drop combining marks (category Mn), and split every punctuation character off.
    """
    chars = []
    for c in text:
        if c in "\t\n\r ":
            chars.append(" ")
            continue
        cat = unicodedata.category(c)
        if c == "\ufffd" or cat[0] == "C":
            continue
        if cat == "Zs":
            chars.append(" ")
        elif c >= "\u3400" and _is_cjk(c):
            chars.append(f" {c} ")
        else:
            chars.append(c)
    words: list[str] = []
    for word in "".join(chars).split():
        if word in SPECIAL_TOKENS:
            words.append(word)
            continue
        current: list[str] = []
        for c in unicodedata.normalize("NFD", word.lower()):
            if unicodedata.category(c) == "Mn":
                continue
            if _is_punctuation(c):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(c)
            else:
                current.append(c)
        if current:
            words.append("".join(current))
    return words


class VocabError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and line."""


@dataclass
class TokenizedBatch:
    """Fixed-length encodings of B sentences, each (B, max_length) int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def load_vocab(path: str | Path) -> dict[str, int]:
    """Token -> id, id = 0-based line number (one token per line, like BERT's vocab.txt)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabError(f"{path}: vocabulary file not found (expected BERT's vocab.txt)") from None
    except UnicodeDecodeError as err:
        raise VocabError(f"{path}: vocabulary is not valid UTF-8 ({err})") from None
    lines = text.split("\n")  # only newlines end a line (str.splitlines also breaks on U+2028 etc.)
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        token = line.strip()
        if not token:
            raise VocabError(f"{path}:{index + 1}: empty token line")
        if token in vocab:
            raise VocabError(f"{path}:{index + 1}: token {token!r} already on line {vocab[token] + 1}")
        vocab[token] = index
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise VocabError(f"{path}: special tokens {missing} are missing from the vocabulary")
    return vocab


def wordpieces(word: str, vocab: dict[str, int]) -> list[str]:
    """Greedy longest-match-first WordPiece of one basic word; ``[UNK]`` when it cannot be matched
    whole or is longer than ``MAX_WORD_CHARS`` (the original's ``WordpieceTokenizer``)."""
    if len(word) > MAX_WORD_CHARS:
        return ["[UNK]"]
    pieces: list[str] = []
    start = 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def _rust_pipeline(vocab: dict[str, int]) -> Any:
    """The uncased BERT pipeline in ``tokenizers``, without special tokens, truncation or padding."""
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))
    tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    return tok


BACKENDS = ("auto", "rust", "python")


class LXRTTokenizer:
    """Uncased BERT WordPiece tokenizer producing the original's fixed-length model inputs.

    ``backend="auto"`` uses the Rust ``tokenizers`` library when it is installed: ASCII sentences
    without special tokens (nearly all of VQA, GQA and NLVR2) go through its whole pipeline; other
    sentences are split into words by ``basic_words`` (the original's rules in Python) and only
    WordPiece runs in Rust, since the Rust normalizer's Unicode tables are older than Python's, it
    lowercases without the final-sigma rule, mistypes a CJK block bound and has no notion of whole-word
    special tokens. ``backend="python"`` (the fallback without ``tokenizers``) runs the original's
    algorithm in Python; both give the same ids.
    """

    def __init__(
        self, vocab_path: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH, backend: str = "auto"
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "rust" and Tokenizer is None:
            raise ImportError("backend='rust' needs the tokenizers package (pip install tokenizers)")
        self.backend = "python" if backend == "python" or Tokenizer is None else "rust"
        self._backend_arg = backend
        self.vocab_path = Path(vocab_path) if vocab_path is not None else DEFAULT_VOCAB_PATH
        self.max_length = self._check_length(max_length)
        self.vocab = load_vocab(self.vocab_path)
        self.ids_to_tokens = list(self.vocab)
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        if self.backend == "rust":
            self._full = _rust_pipeline(self.vocab)
            # WordPiece alone, for words already produced by ``basic_words``.
            self._pieces = Tokenizer(WordPiece(self.vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))

    def __reduce__(self) -> tuple[type, tuple[Path, int, str]]:
        # Rebuilt from the vocabulary file: a pickle (e.g. for spawned DataLoader workers) stays tiny.
        return (type(self), (self.vocab_path, self.max_length, self._backend_arg))

    @staticmethod
    def _check_length(max_length: int) -> int:
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        return int(max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Vocabulary ids; an unknown token is an error (like the original), not silently [UNK]."""
        try:
            return [self.vocab[t] for t in tokens]
        except KeyError as err:
            raise KeyError(f"token {err.args[0]!r} is not in the vocabulary {self.vocab_path}") from None

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.ids_to_tokens[int(i)] for i in ids]

    @staticmethod
    def _rust_safe(text: str) -> bool:
        """True when the Rust normalizer and pre-tokenizer reproduce the original exactly."""
        return text.isascii() and not ("[" in text and any(t in text for t in SPECIAL_TOKENS))

    def _pieces_of(self, sents: Sequence[str]) -> list[list[int]]:
        """Wordpiece ids of ``sent.strip()`` for each sentence (no specials, no truncation)."""
        if isinstance(sents, str):
            raise TypeError("expected a sequence of sentences, got a single str")
        out = []
        # One call per sentence rather than encode_batch: as fast for short sentences, and no Rust
        # thread pool that forked DataLoader workers would inherit.
        for i, s in enumerate(sents):
            if not isinstance(s, str):
                raise TypeError(f"sentence {i} is {type(s).__name__}, expected str")
            text = s.strip()
            if self.backend == "python":
                out.append([self.vocab[p] for w in basic_words(text) for p in wordpieces(w, self.vocab)])
            elif self._rust_safe(text):
                out.append(self._full.encode(text, add_special_tokens=False).ids)
            else:
                out.append(self._pieces.encode(basic_words(text), is_pretokenized=True, add_special_tokens=False).ids)
        return out

    def tokenize(self, text: str) -> list[str]:
        """Wordpieces of one sentence, without [CLS]/[SEP]."""
        return self.convert_ids_to_tokens(self._pieces_of([text])[0])

    def encode_wordpieces(self, sents: Sequence[str]) -> list[list[int]]:
        """Wordpiece ids of each sentence without specials or truncation (pretraining masks these)."""
        return self._pieces_of(sents)

    def __call__(self, sents: Sequence[str], max_length: int | None = None) -> TokenizedBatch:
        """Fixed-length ``[CLS] tokens [SEP] [PAD]...`` rows for a batch of sentences: the first
        ``max_length - 2`` wordpieces of each, as the original's ``convert_sents_to_features``."""
        length = self._check_length(max_length) if max_length is not None else self.max_length
        pieces = self._pieces_of(sents)
        ids = np.full((len(pieces), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(pieces), length), dtype=np.int64)
        for row, p in enumerate(pieces):
            framed = [self.cls_id, *p[: length - 2], self.sep_id]
            ids[row, : len(framed)] = framed
            mask[row, : len(framed)] = 1
        return TokenizedBatch(torch.from_numpy(ids), torch.from_numpy(mask), torch.zeros_like(torch.from_numpy(ids)))
