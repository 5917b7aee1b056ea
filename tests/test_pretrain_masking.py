"""Pretraining examples: corpus loading, masking statistics, matching, QA targets, determinism."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from features.tsv import RegionRecord, write_tsv
from lxrt.tokenizer import LXRTTokenizer
from pretrain.data import (
    TARGET_KEYS,
    CorpusError,
    ExampleOptions,
    PretrainDataset,
    RegionPool,
    collate,
    load_corpus,
)
from pretrain.masking import IGNORE, frame_tokens, mask_regions, mask_words, sample_answer
from tasks.answers import convert_ans

DIM, BOXES = 8, 10
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink", "gray", "navy", "tan", "lime"]
ANIMALS = ["dog", "cat", "horse", "cow", "bird", "sheep"]
ANSWERS = {"yes": 0, "no": 1, "2": 2, "man": 3}


def record(img_id: str, seed: int, boxes: int = BOXES) -> RegionRecord:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (boxes, 2))
    return RegionRecord(
        img_id=img_id, img_h=100, img_w=100,
        objects_id=rng.integers(0, 16, boxes), objects_conf=rng.random(boxes, dtype=np.float32),
        attrs_id=rng.integers(0, 8, boxes), attrs_conf=rng.random(boxes, dtype=np.float32),
        boxes=np.concatenate([xy, xy + 40], axis=1).astype(np.float32),
        features=(rng.random((boxes, DIM)) + 0.5).astype(np.float32),  # never all zero
    )


def write_root(root: Path, images: int = 12, extra_json_images: int = 0, box_counts: list | None = None):
    """mscoco_train.json + train2014_obj36.tsv: image i has 2 captions and 2 QA sentences with labels."""
    (root / "lxmert").mkdir(parents=True)
    (root / "mscoco_imgfeat").mkdir()
    entries = []
    for i in range(images + extra_json_images):
        color = COLORS[i % len(COLORS)]
        entries.append({
            "img_id": f"COCO_train2014_{i:012d}",
            "sentf": {
                "mscoco": [f"a {color} {ANIMALS[j]} on the grass with a long tail" for j in range(2)],
                "vqa": [f"is the {color} {ANIMALS[2 + j]} there" for j in range(2)],
            },
            # label 0: two answers (one needs convert_ans); label 1: only answers outside the table
            "labelf": {"vqa": [{"Yes": 0.3, "no.": 0.9}, {"purple elephant": 1.0}]},
        })
    (root / "lxmert" / "mscoco_train.json").write_text(json.dumps(entries))
    counts = box_counts or [BOXES] * images
    write_tsv(
        root / "mscoco_imgfeat" / "train2014_obj36.tsv",
        [record(f"COCO_train2014_{i:012d}", i, counts[i]) for i in range(images)],
    )
    return root


@pytest.fixture(scope="module")
def tokenizer() -> LXRTTokenizer:
    return LXRTTokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_root(tmp_path_factory.mktemp("data"), extra_json_images=3)
    return load_corpus(root, "mscoco_train", ANSWERS, convert_ans, progress=False)


def dataset(corpus, tokenizer, seed: int = 7, **options) -> PretrainDataset:
    return PretrainDataset(corpus, tokenizer, ANSWERS, ExampleOptions(**options), seed=seed)


def examples(data: PretrainDataset, epochs: int = 1) -> list:
    out = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        out.extend(data[i] for i in range(len(data)))
    return out


def test_corpus_pairs_uids_labels_and_dropped_images(corpus):
    assert len(corpus) == 12 * 4
    assert corpus.dropped == 3 * 4  # three JSON images have no features
    assert corpus.uid(0) == "COCO_train2014_000000000000_mscoco_000"
    assert corpus.uid(3) == "COCO_train2014_000000000000_vqa_001"
    # answers normalized with convert_ans and filtered to the table; the other label is empty
    assert corpus.labels[2] == {"yes": 0.3, "no": 0.9}
    assert corpus.labels[3] == {}
    assert 0 not in corpus.labels  # captions have no QA label
    assert set(corpus.labeled_uids()) == {corpus.uid(i) for i in corpus.labels}


def test_word_masking_rates_and_80_10_10():
    rng = np.random.default_rng(0)
    tokens = np.arange(1000, 1000 + 200_000) % 20000 + 1000
    out, labels = mask_words(tokens, rng, 0.15, vocab_size=30522, mask_id=103)
    selected = labels != -1
    assert selected.mean() == pytest.approx(0.15, abs=0.005)
    assert np.array_equal(labels[selected], tokens[selected])
    masked = out[selected] == 103
    unchanged = out[selected] == tokens[selected]
    randomized = ~masked & ~unchanged
    assert masked.mean() == pytest.approx(0.8, abs=0.01)
    assert randomized.mean() == pytest.approx(0.1, abs=0.01)
    assert unchanged.mean() == pytest.approx(0.1, abs=0.01)
    assert np.array_equal(out[~selected], tokens[~selected])
    # random replacements come from the whole vocabulary, not just the sentence
    assert out[selected][randomized].min() < 1000 and out[selected][randomized].max() > 21000


def test_special_tokens_and_padding_are_never_masked(corpus, tokenizer):
    data = dataset(corpus, tokenizer, word_mask_rate=0.9)  # mask nearly every word
    selected = real = 0
    for ex in examples(data, epochs=3):
        n = int(ex.input_mask.sum())
        assert ex.input_ids[0] == tokenizer.cls_id and ex.input_ids[n - 1] == tokenizer.sep_id
        assert (ex.input_ids[n:] == tokenizer.pad_id).all()
        assert ex.lm_labels[0] == -1 and ex.lm_labels[n - 1] == -1 and (ex.lm_labels[n:] == -1).all()
        if ex.is_matched:
            selected += int((ex.lm_labels[1 : n - 1] != -1).sum())
            real += n - 2
    assert selected / real == pytest.approx(0.9, abs=0.05)


def test_long_sentences_are_truncated_to_18_wordpieces(tmp_path, tokenizer):
    root = write_root(tmp_path, images=2)
    path = root / "lxmert" / "mscoco_train.json"
    entries = json.loads(path.read_text())
    entries[0]["sentf"]["mscoco"][0] = " ".join(["giraffe"] * 40)
    path.write_text(json.dumps(entries))
    corpus = load_corpus(root, "mscoco_train", ANSWERS, convert_ans, progress=False)
    ex = dataset(corpus, tokenizer, task_matched=False, word_mask_rate=0.0)[0]
    assert int(ex.input_mask.sum()) == 20 and ex.input_ids[19] == tokenizer.sep_id
    assert ex.input_ids.shape == (20,)


def test_region_masking_rates_split_and_targets(corpus, tokenizer):
    data = dataset(corpus, tokenizer, obj_mask_rate=0.15)
    pool_rows = {
        row.tobytes()
        for img in range(len(corpus.img_ids))
        for row in np.asarray(corpus.regions(img).features, np.float32)
    }
    zero = rand = keep = total = 0
    for ex in examples(data, epochs=12):
        original = ex.feat_target
        regions = corpus.regions(corpus.img_ids.index(ex.uid.rsplit("_", 2)[0]))
        assert np.array_equal(original, np.asarray(regions.features, np.float32))
        assert np.array_equal(ex.boxes, regions.boxes)  # boxes are never masked
        assert np.array_equal(ex.obj_labels, regions.objects_id)
        assert np.array_equal(ex.attr_conf, regions.attrs_conf)
        sel = ex.feat_mask.astype(bool)
        assert np.array_equal(ex.feats[~sel], original[~sel])
        for i in np.flatnonzero(sel):
            if not ex.feats[i].any():
                zero += 1
            elif np.array_equal(ex.feats[i], original[i]):
                keep += 1
            else:
                assert ex.feats[i].tobytes() in pool_rows  # a region of a training image
                rand += 1
        total += len(sel)
    chosen = zero + rand + keep
    assert chosen / total == pytest.approx(0.15, abs=0.02)
    assert zero / chosen == pytest.approx(0.8, abs=0.05)
    assert rand / chosen == pytest.approx(0.1, abs=0.04)
    assert keep / chosen == pytest.approx(0.1, abs=0.04)


def test_mismatched_sentences_come_from_other_images(corpus, tokenizer):
    data = dataset(corpus, tokenizer, word_mask_rate=0.0)
    owner = {}
    for i, sent in enumerate(corpus.sents):
        owner.setdefault(tuple(tokenizer.encode_wordpieces([sent])[0]), set()).add(int(corpus.ex_img[i]))
    flags = []
    for index, ex in enumerate(examples(data, epochs=4)):
        n = int(ex.input_mask.sum())
        images = owner[tuple(ex.input_ids[1 : n - 1].tolist())]
        img = int(corpus.ex_img[index % len(corpus)])
        assert (img in images) == bool(ex.is_matched)
        flags.append(ex.is_matched)
    assert np.mean(flags) == pytest.approx(0.5, abs=0.07)


@pytest.mark.parametrize("compat", ["original", "corrected"])
def test_mismatched_pairs_targets(corpus, tokenizer, compat):
    data = dataset(corpus, tokenizer, drop_mismatched_lm=compat == "corrected")
    mismatched = [ex for ex in examples(data, epochs=3) if not ex.is_matched]
    assert mismatched
    assert all(ex.qa_label == -1 for ex in mismatched)
    with_lm = sum(int((ex.lm_labels != -1).any()) for ex in mismatched)
    if compat == "corrected":
        assert with_lm == 0
    else:
        assert with_lm > len(mismatched) // 2


def test_qa_targets_follow_scores(corpus, tokenizer):
    data = dataset(corpus, tokenizer, task_matched=False)
    exs = examples(data, epochs=2)
    by_kind: dict[str, list[int]] = {"caption": [], "two": [], "empty": []}
    for index, ex in enumerate(exs):
        kind = ["caption", "caption", "two", "empty"][index % len(corpus) % 4]
        by_kind[kind].append(ex.qa_label)
        assert ex.qa_scored == (kind != "caption")
    assert set(by_kind["caption"]) == {-1} and set(by_kind["empty"]) == {-1}
    two = []
    for epoch in range(200):
        data.set_epoch(epoch)
        two.extend(data[i].qa_label for i in range(2, len(corpus), 4))
    assert set(two) == {0, 1}
    assert np.mean(np.array(two) == 1) == pytest.approx(0.9 / 1.2, abs=0.03)
    draws = [sample_answer({"yes": 1.0, "no": 3.0}, ANSWERS, np.random.default_rng(i)) for i in range(4000)]
    assert np.mean(np.array(draws) == 1) == pytest.approx(0.75, abs=0.03)
    assert sample_answer({"man": 0.6}, ANSWERS, np.random.default_rng(0)) == 3


def test_examples_are_deterministic_per_seed_epoch_index(corpus, tokenizer):
    a = dataset(corpus, tokenizer, seed=3)
    b = dataset(corpus, tokenizer, seed=3)  # e.g. a resumed run, or another worker
    b.set_epoch(2)
    a.set_epoch(2)
    for i in (5, 0, 17):  # any order of access
        x, y = a[i], b[i]
        assert np.array_equal(x.input_ids, y.input_ids) and np.array_equal(x.feats, y.feats)
        assert x.is_matched == y.is_matched and x.qa_label == y.qa_label
    a.set_epoch(3)
    assert any(not np.array_equal(a[i].feats, b[i].feats) for i in range(20))
    c = dataset(corpus, tokenizer, seed=4)
    c.set_epoch(2)
    assert any(not np.array_equal(c[i].feat_mask, b[i].feat_mask) for i in range(20))


def test_validation_uses_the_training_pool(tmp_path, corpus, tokenizer):
    other = write_root(tmp_path, images=3)
    valid = load_corpus(other, "mscoco_train", ANSWERS, convert_ans, progress=False)
    pool = RegionPool(corpus)
    options = ExampleOptions(obj_mask_rate=1.0)
    data = PretrainDataset(valid, tokenizer, ANSWERS, options, seed=1, region_pool=pool)
    train_rows = {
        r.tobytes()
        for img in range(len(corpus.img_ids))
        for r in np.asarray(corpus.regions(img).features, np.float32)
    }
    replaced = [
        ex.feats[i] for ex in examples(data, epochs=5) for i in range(BOXES)
        if ex.feats[i].any() and not np.array_equal(ex.feats[i], ex.feat_target[i])
    ]
    assert replaced and all(r.tobytes() in train_rows for r in replaced)


def test_collate_pads_images_with_fewer_regions(tmp_path, tokenizer):
    root = write_root(tmp_path, images=3, box_counts=[10, 4, 7])
    corpus = load_corpus(root, "mscoco_train", ANSWERS, convert_ans, progress=False)
    data = dataset(corpus, tokenizer)
    batch = collate([data[0], data[4], data[8]])
    assert batch.feats.shape == (3, 10, DIM) and batch.input_ids.shape == (3, 20)
    assert set(batch.targets) == set(TARGET_KEYS)
    assert batch.visual_mask.tolist()[1] == [1] * 4 + [0] * 6
    assert (batch.targets["feat_mask"][1, 4:] == 0).all()
    assert (batch.targets["obj_labels"][1, 4:] == -1).all()
    assert batch.ids == [corpus.uid(0), corpus.uid(4), corpus.uid(8)]
    with pytest.raises(ValueError, match="object class"):
        collate([data[0]], num_object_labels=2)
    full = collate([data[0], data[1]])
    assert full.visual_mask is None


def test_bad_json_is_reported_with_file_and_entry(tmp_path):
    root = write_root(tmp_path, images=2)
    path = root / "lxmert" / "mscoco_train.json"
    entries = json.loads(path.read_text())
    entries[1]["labelf"]["vqa"] = entries[1]["labelf"]["vqa"][:1]
    path.write_text(json.dumps(entries))
    where = r"mscoco_train.json: entry 1 \(img_id 'COCO_train2014_000000000001'\)"
    with pytest.raises(CorpusError, match=where):
        load_corpus(root, "mscoco_train", ANSWERS, convert_ans, progress=False)
    path.write_text('[{"img_id": "x", "sentf": ')
    with pytest.raises(CorpusError, match="malformed JSON"):
        load_corpus(root, "mscoco_train", ANSWERS, convert_ans, progress=False)
    with pytest.raises(ValueError, match="unknown pretraining split"):
        load_corpus(root, "mscoco_test", ANSWERS, convert_ans, progress=False)


def test_matching_needs_two_images(tmp_path, tokenizer):
    corpus = load_corpus(write_root(tmp_path, images=1), "mscoco_train", ANSWERS, convert_ans, progress=False)
    with pytest.raises(ValueError, match="at least 2 images"):
        dataset(corpus, tokenizer)
    assert len(dataset(corpus, tokenizer, task_matched=False)) == 4


class FixedDraws:
    """A generator stand-in that hands out given uniform draws and replacement ids."""

    def __init__(self, u, replacements=None):
        self.u, self.replacements = np.asarray(u, dtype=np.float64), replacements

    def random(self, n):
        assert n == len(self.u)
        return self.u

    def integers(self, low, high, size):
        return np.asarray(self.replacements if self.replacements is not None else [low] * size)


def test_the_80_10_10_boundaries_of_one_draw():
    """At rate 0.5, u = 0.4 scales to exactly 0.8 (random, not masked) and u = 0.45 to exactly 0.9 (kept, not
    random); u = 0.5 is not selected (u < rate selects)."""
    u = [0.0, 0.3999, 0.4, 0.4499, 0.45, 0.4999, 0.5, 0.9]
    tokens = np.arange(10, 18, dtype=np.int32)
    out, labels = mask_words(tokens, FixedDraws(u, list(range(100, 108))), 0.5, vocab_size=1000, mask_id=3)
    assert out.tolist() == [3, 3, 102, 103, 14, 15, 16, 17]
    assert labels.tolist() == [10, 11, 12, 13, 14, 15, IGNORE, IGNORE]
    assert out.dtype == np.int64 and labels.dtype == np.int64  # whatever the input's integer type
    feats = np.ones((8, 2), dtype=np.float32)
    masked, feat_mask = mask_regions(feats, FixedDraws(u), 0.5, lambda rng: np.full(2, 7.0))
    assert masked[:, 0].tolist() == [0, 0, 7, 7, 1, 1, 1, 1]
    assert feat_mask.tolist() == [1, 1, 1, 1, 1, 1, 0, 0] and feat_mask.dtype == np.float32
    assert masked.dtype == np.float32 and feats.min() == 1.0  # the input is not changed in place


def test_rates_zero_and_one_and_out_of_range():
    tokens = [5, 6, 7, 8]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rate 0 divides nothing by zero
        out, labels = mask_words(tokens, np.random.default_rng(0), 0.0, vocab_size=100, mask_id=3)
    assert out.tolist() == tokens and labels.tolist() == [IGNORE] * 4
    out, labels = mask_words(tokens, np.random.default_rng(0), 1.0, vocab_size=100, mask_id=3)
    assert labels.tolist() == tokens
    for rate in (1.5, -0.1, 1.0000001):
        with pytest.raises(ValueError, match=rf"^mask rate must be in \[0, 1\], got {rate}$"):
            mask_words(tokens, np.random.default_rng(0), rate, vocab_size=100, mask_id=3)


def test_word_masking_draws_in_a_fixed_order():
    """One uniform draw per token, then one replacement per token from [0, vocab): the same seed gives the
    same corruption as this restatement."""
    tokens = list(range(40, 540))
    out, labels = mask_words(tokens, np.random.default_rng(5), 0.9, vocab_size=7, mask_id=3)
    rng = np.random.default_rng(5)
    u, repl = rng.random(500), rng.integers(0, 7, size=500)
    for tok, ui, r, o, lab in zip(tokens, u, repl, out, labels):
        if ui >= 0.9:
            assert (o, lab) == (tok, IGNORE)
        else:
            assert lab == tok and o == (3 if ui / 0.9 < 0.8 else r if ui / 0.9 < 0.9 else tok)
    assert 0 in repl  # a replacement can be id 0, like any other


def test_frame_tokens_types_and_the_length_limit():
    ids, mask, lm = frame_tokens(np.array([7, 8], dtype=np.int32), np.array([IGNORE, 8]), 5, np.int32(1),
                                 np.int32(2), np.int32(0))  # fmt: skip
    assert ids.tolist() == [1, 7, 8, 2, 0] and mask.tolist() == [1, 1, 1, 1, 0] and lm.tolist() == [-1, -1, 8, -1, -1]
    assert ids.dtype == mask.dtype == lm.dtype == np.int64
    frame_tokens(np.arange(3), np.arange(3), 5, 1, 2, 0)  # exactly max_length - 2 fits
    with pytest.raises(ValueError, match=r"^4 wordpieces do not fit max_length 5 with \[CLS\] and \[SEP\]$"):
        frame_tokens(np.arange(4), np.arange(4), 5, 1, 2, 0)


def test_answer_sampling_edge_cases():
    ids = {"a": 0, "b": 1, "c": 2}
    rng = np.random.default_rng(0)
    assert sample_answer({}, ids, rng) == IGNORE
    assert sample_answer({"b": 0.3}, ids, rng) == 1  # one answer: no draw
    assert sample_answer({"a": 0.0, "b": 0.0}, ids, rng) == IGNORE
    draws = [sample_answer({"a": 0.2, "c": 0.3}, ids, rng) for _ in range(400)]  # scores summing to 0.5
    assert set(draws) == {0, 2} and 0.5 < draws.count(2) / 400 < 0.7  # P(c) = 0.3 / 0.5
