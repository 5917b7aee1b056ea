"""Parity of LXRTTokenizer with the pure-Python BERT tokenizer shipped in transformers (slow classes),
for both of its backends: the Rust ``tokenizers`` pipeline and the plain-Python fallback that a copy of
``lxrt`` without ``tokenizers`` runs."""

from __future__ import annotations

import pickle
import random

import pytest
import torch

from lxrt.tokenizer import DEFAULT_VOCAB_PATH, LXRTTokenizer, VocabError, basic_words, load_vocab


def _legacy():
    """transformers' slow BERT tokenizer module (transformers >= 5, as requirements-dev.txt pins);
    only the tests comparing against it skip without it."""
    return pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")


SPECIALS = ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]

CORPUS = [
    # VQA / GQA / NLVR2-like sentences
    "What is this photo taken looking through?",
    "Is the man's shirt red or blue?",
    "How many people are in the image?",
    "What color is the umbrella on the left side of the picture?",
    "Are there both cars and trucks in this photo?",
    "The left image contains exactly two dogs, and the right image shows a single puppy.",
    "Which room is it?  It's the kitchen, isn't it?!",
    "what's the man holding?",
    "Don't you think it's 3:45 p.m. (or later)?",
    "e-mail me @ foo@bar.com #hashtag $100 50% ^caret `tick` ~tilde |pipe| \\slash\\ {curly} <angle>",
    "1,000,000 people; 3.14159 pi; 2nd place; 10x zoom; 1980s",
    "...!!!???---___",
    # accents and other scripts
    "café naïve Ångström résumé jalapeño Zürich",
    "CAFÉ NAÏVE ÅNGSTRÖM",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ",
    "这是什么颜色的猫？ 東京タワー",
    "猫が好き。한국어 문장입니다.",
    "Что это за животное?",
    "ما هذا الحيوان؟",
    "ΟΔΟΣ οδός Σίσυφος ΣΑΣ",
    "emoji 🐶🐱 in text 👍🏽 and 🇺🇸 flags",
    # control, invisible and replacement characters
    "tab\there\nnew line\r\ncarriage",
    "nul\x00char and \ufffd replacement",
    "zero\u200bwidth\u200cjoin\u200dand\ufeffbom",
    "bell\x07 escape\x1b unit\x1fsep \x85next",
    "non\u00a0breaking\u2003em\u3000ideographic space",
    "line\u2028separator\u2029paragraph",
    "soft\u00adhyphen and combining e\u0301 a\u0308",
    # long words
    "a" * 100,
    "a" * 101,
    "supercalifragilisticexpialidocious " + "x" * 150 + " end",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    # special-token-like strings
    "[MASK]",
    "the [MASK] is on the [MASK].",
    "[mask] [Mask] [MASK]x x[MASK] ([MASK]) [MASK][MASK] [CLS] [SEP] [PAD] [UNK]",
    "[ MASK ] [MASKED] MASK",
    # empty and whitespace-only
    "",
    " ",
    "\t\n  \r ",
    "\u3000\u00a0",
]


@pytest.fixture(scope="module", params=["rust", "python"])
def tok(request) -> LXRTTokenizer:
    return LXRTTokenizer(backend=request.param)


@pytest.fixture(scope="module")
def reference():
    """The slow transformers BERT tokenizer, built from the shipped vocabulary."""
    legacy = _legacy()
    vocab = legacy.load_vocab(str(DEFAULT_VOCAB_PATH))
    assert len(vocab) == 30522, "reference tokenizer did not load the 30522-token vocabulary"
    basic = legacy.BasicTokenizer(do_lower_case=True, never_split=SPECIALS)
    wordpiece = legacy.WordpieceTokenizer(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100)

    def ids(text: str) -> list[int]:
        pieces: list[str] = []
        for word in basic.tokenize(text.strip()):
            pieces += [word] if word in SPECIALS else wordpiece.tokenize(word)
        return [vocab[p] for p in pieces]

    return ids


def _fuzz_corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = (
        "abcXYZ019 .,;:!?'\"-()[]{}<>/\\@#$%^&*_~`|+=\t\n"
        "éÉüÜñçßøåÅœæΣσςΑΩ字猫東京タワー한국Жжийعربي"
        "\u0301\u0308\u200b\u00a0\u3000\x00\ufffd\x1f"
    )
    out = []
    for _ in range(n):
        words = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.2:
            words.insert(rng.randint(0, len(words)), rng.choice(SPECIALS))
        out.append(" ".join(words))
    return out


def _codepoint_corpus() -> list[str]:
    # A sample of every Unicode plane in use, plus blocks where Rust and Python Unicode tables differ.
    cps = list(range(0, 0x30000, 61)) + list(range(0xE0000, 0xE0080)) + [0x166D, 0x1734, 0x061D]
    cps += list(range(0x2B81E, 0x2B925)) + list(range(0x0898, 0x08A0)) + list(range(0x1F970, 0x1F980))
    return [f"a{chr(c)}b {chr(c)} X{chr(c)}" for c in cps if not 0xD800 <= c <= 0xDFFF]


def test_vocab_and_special_ids(tok: LXRTTokenizer) -> None:
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.convert_tokens_to_ids(["[CLS]", "the", "##s"]) == [101, 1996, 2015]
    assert tok.convert_ids_to_tokens([101, 1996, 2015]) == ["[CLS]", "the", "##s"]
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tok.convert_tokens_to_ids(["definitely-not-a-token"])


def test_known_wordpieces(tok: LXRTTokenizer) -> None:
    assert tok.tokenize("What is this photo taken looking through?") == [
        "what", "is", "this", "photo", "taken", "looking", "through", "?",
    ]  # fmt: skip
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert tok.tokenize("a" * 101) == ["[UNK]"]
    assert tok.tokenize("the [MASK] sat") == ["the", "[MASK]", "sat"]
    assert tok.tokenize("x[MASK]") == ["x", "[", "mask", "]"]


@pytest.mark.parametrize("text", CORPUS)
def test_ids_match_reference(tok: LXRTTokenizer, reference, text: str) -> None:
    assert tok.encode_wordpieces([text]) == [reference(text)]


def test_fuzz_and_codepoints_match_reference(tok: LXRTTokenizer, reference) -> None:
    texts = _fuzz_corpus() + _codepoint_corpus()
    ours = tok.encode_wordpieces(texts)
    bad = [(t, o, reference(t)) for t, o in zip(texts, ours) if o != reference(t)]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0]!r}"


@pytest.mark.parametrize("max_length", [2, 5, 20, 64])
def test_fixed_length_batch_matches_reference(tok: LXRTTokenizer, reference, max_length: int) -> None:
    texts = CORPUS + _fuzz_corpus(60, seed=1)
    batch = tok(texts, max_length=max_length)
    for tensor in (batch.input_ids, batch.attention_mask, batch.token_type_ids):
        assert tensor.dtype == torch.int64 and tensor.shape == (len(texts), max_length)
    assert len(batch) == len(texts)
    assert int(batch.token_type_ids.abs().sum()) == 0
    for row, text in enumerate(texts):
        body = reference(text)[: max_length - 2]
        ids = [101, *body, 102]
        expected = ids + [0] * (max_length - len(ids))
        assert batch.input_ids[row].tolist() == expected, text
        assert batch.attention_mask[row].tolist() == [1] * len(ids) + [0] * (max_length - len(ids))


def test_default_length_is_20(tok: LXRTTokenizer) -> None:
    batch = tok(["a very long question " * 10, "short"])
    assert batch.input_ids.shape == (2, 20)
    assert batch.input_ids[0, -1].item() == tok.sep_id and batch.attention_mask[0].sum() == 20
    assert batch.input_ids[1].tolist()[:3] == [101, tok.vocab["short"], 102]


def test_basic_words_matches_reference_basic_tokenizer() -> None:
    basic = _legacy().BasicTokenizer(do_lower_case=True, never_split=SPECIALS)
    for text in CORPUS + _fuzz_corpus(100, seed=2):
        assert basic_words(text) == basic.tokenize(text), repr(text)


def test_bad_inputs(tok: LXRTTokenizer, tmp_path) -> None:
    with pytest.raises(TypeError, match="sentence 1"):
        tok(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single str"):
        tok("not a list")
    with pytest.raises(ValueError, match="max_length"):
        tok(["x"], max_length=1)
    missing = tmp_path / "nope.txt"
    with pytest.raises(VocabError, match="nope.txt"):
        LXRTTokenizer(missing)
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join([*SPECIALS, "a", "b", "a"]) + "\n")
    with pytest.raises(VocabError, match=r"dup.txt:8: token 'a' already on line 6"):
        load_vocab(dup)
    nospecial = tmp_path / "small.txt"
    nospecial.write_text("[PAD]\na\n")
    with pytest.raises(VocabError, match="special tokens"):
        load_vocab(nospecial)


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_custom_small_vocab(tmp_path, backend: str) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join([*SPECIALS, "red", "cube", "##s", "?"]) + "\n")
    small = LXRTTokenizer(path, max_length=6, backend=backend)
    assert small.vocab_size == 9 and small.cls_id == 3 and small.pad_id == 2
    assert small.tokenize("Red cubes? blue") == ["red", "cube", "##s", "?", "[UNK]"]
    assert small(["red cubes?"]).input_ids.tolist() == [[3, 5, 6, 7, 8, 1]]


def test_pickle_rebuilds_from_vocab_file(tok: LXRTTokenizer) -> None:
    data = pickle.dumps(tok)
    assert len(data) < 10_000  # the vocabulary is re-read, not serialized
    copy = pickle.loads(data)
    texts = ["What color is the cat?", "naïve [MASK] ΟΔΟΣ"]
    assert torch.equal(copy(texts).input_ids, tok(texts).input_ids)


def test_backend_choice() -> None:
    """``auto`` takes Rust when ``tokenizers`` imports; an unknown backend is refused by name."""
    assert LXRTTokenizer().backend == "rust"
    assert pickle.loads(pickle.dumps(LXRTTokenizer(backend="python"))).backend == "python"
    with pytest.raises(ValueError, match="backend"):
        LXRTTokenizer(backend="fast")
