"""BERT uncased WordPiece tokenization, as the original LXMERT feeds sentences to the model.

The pipeline (clean text, space out CJK ideographs, lowercase + strip accents, split off punctuation,
greedy longest-match WordPiece with ``##`` continuations, ``[UNK]`` for words that cannot be matched or
are longer than 100 characters) runs in the Rust ``tokenizers`` library. One rule of the original is
handled here: a whitespace-separated word that is exactly one of the special tokens (``[MASK]`` etc.)
is neither lowercased nor split, so it maps to its own id.

Sentences become fixed-length rows ``[CLS] + first max_length-2 wordpieces + [SEP]``, right-padded
with 0, token types 0 (the original's ``convert_sents_to_features``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer
from tokenizers.models import WordLevel, WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer, WhitespaceSplit
from tokenizers.processors import TemplateProcessing

DEFAULT_VOCAB_PATH = Path(__file__).resolve().parents[2] / "data" / "bert" / "bert-base-uncased-vocab.txt"
# The original BasicTokenizer's ``never_split`` list.
SPECIAL_TOKENS: tuple[str, ...] = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
MAX_WORD_CHARS = 100
DEFAULT_MAX_LENGTH = 20


_CAPITAL_SIGMA = "\u03a3"


def _python_text_rules(text: str) -> str:
    """Make the Rust normalizer agree with the original Python code on non-ASCII text.

    Two places differ: Python drops every character of category C* (unassigned code points
    included, Rust keeps those), and Python's ``str.lower`` turns a word-final capital sigma into
    the final form while Rust lowercases character by character.
    """
    if text.isascii():
        return text
    category = unicodedata.category
    text = "".join(c for c in text if c < "\x80" or category(c)[0] != "C")
    if _CAPITAL_SIGMA in text:
        # The original lowercases each whitespace-separated word on its own, except special tokens.
        text = " ".join(w if w in SPECIAL_TOKENS else w.lower() for w in text.split())
    return text


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
    vocab: dict[str, int] = {}
    for index, line in enumerate(text.splitlines()):
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


def _wordpiece_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """The uncased BERT pipeline without special tokens, truncation or padding."""
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))
    tok.normalizer = BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tok.pre_tokenizer = BertPreTokenizer()
    return tok


class LXRTTokenizer:
    """Uncased BERT WordPiece tokenizer producing the original's fixed-length model inputs."""

    def __init__(self, vocab_path: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.vocab_path = Path(vocab_path) if vocab_path is not None else DEFAULT_VOCAB_PATH
        self.max_length = self._check_length(max_length)
        self.vocab = load_vocab(self.vocab_path)
        self.ids_to_tokens = list(self.vocab)
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        self._words = _wordpiece_tokenizer(self.vocab)
        # Whole-word specials bypass normalization; a tiny word-level model turns them into encodings
        # that can be merged with the WordPiece encodings of the surrounding text.
        self._specials = Tokenizer(
            WordLevel({t: self.vocab[t] for t in SPECIAL_TOKENS}, unk_token="[UNK]")
        )
        self._specials.pre_tokenizer = WhitespaceSplit()
        # Only clean_text + CJK spacing: reproduces the original's text before its whitespace split.
        self._cleaner = BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
        )
        self._framed: dict[int, Tokenizer] = {}

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

    def _framer(self, max_length: int) -> Tokenizer:
        """The WordPiece pipeline plus [CLS] $A [SEP], truncation and padding to ``max_length``."""
        framed = self._framed.get(max_length)
        if framed is None:
            framed = Tokenizer.from_str(self._words.to_str())
            framed.post_processor = TemplateProcessing(
                single="[CLS] $A [SEP]",
                special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)],
            )
            framed.enable_truncation(max_length=max_length, strategy="longest_first", direction="right")
            framed.enable_padding(
                direction="right", pad_id=self.pad_id, pad_type_id=0, pad_token="[PAD]", length=max_length
            )
            self._framed[max_length] = framed
        return framed

    @staticmethod
    def _has_special_word(text: str) -> bool:
        return "[" in text and any(t in text for t in SPECIAL_TOKENS)

    def _encode_with_specials(self, text: str) -> Encoding:
        """Wordpieces of ``text`` (no framing) honouring whole-word special tokens."""
        words = self._cleaner.normalize_str(text).split()
        parts: list[Encoding] = []
        plain: list[str] = []
        for word in words:
            if word in SPECIAL_TOKENS:
                if plain:
                    parts.append(self._words.encode(" ".join(plain), add_special_tokens=False))
                    plain = []
                parts.append(self._specials.encode(word, add_special_tokens=False))
            else:
                plain.append(word)
        if plain:
            parts.append(self._words.encode(" ".join(plain), add_special_tokens=False))
        return Encoding.merge(parts, growing_offsets=True)

    def _encode_plain(self, sents: Sequence[str], tok: Tokenizer, specials: bool) -> list[Encoding]:
        """Encode a batch; sentences with whole-word specials take the (rare) slow path."""
        texts = []
        for i, s in enumerate(sents):
            if not isinstance(s, str):
                raise TypeError(f"sentence {i} is {type(s).__name__}, expected str")
            texts.append(_python_text_rules(s.strip()))
        out = tok.encode_batch(texts, add_special_tokens=specials)
        for i, text in enumerate(texts):
            if self._has_special_word(text):
                enc = self._encode_with_specials(text)
                out[i] = tok.post_process(enc, add_special_tokens=True) if specials else enc
        return out

    def tokenize(self, text: str) -> list[str]:
        """Wordpieces of one sentence, without [CLS]/[SEP]."""
        return self._encode_plain([text], self._words, specials=False)[0].tokens

    def encode_wordpieces(self, sents: Sequence[str]) -> list[list[int]]:
        """Wordpiece ids of each sentence without specials or truncation (pretraining masks these)."""
        return [e.ids for e in self._encode_plain(sents, self._words, specials=False)]

    def __call__(self, sents: Sequence[str], max_length: int | None = None) -> TokenizedBatch:
        """Fixed-length ``[CLS] tokens [SEP] [PAD]...`` rows for a batch of sentences."""
        if isinstance(sents, str):
            raise TypeError("expected a sequence of sentences, got a single str")
        length = self._check_length(max_length) if max_length is not None else self.max_length
        encodings = self._encode_plain(sents, self._framer(length), specials=True)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row] = enc.ids
            mask[row] = enc.attention_mask
            types[row] = enc.type_ids
        return TokenizedBatch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
