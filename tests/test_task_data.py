"""Answer tables and the VQA / GQA / NLVR2 datasets and collators, on generated data."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from features import open_store
from lxrt.tokenizer import LXRTTokenizer
from tasks.answers import AnswerTable, DataFormatError, PretrainAnswerTable, convert_ans, load_json
from tasks.data_common import ImageFeatures, MissingFeaturesError, QACollator, parse_splits, subset_topk
from tasks.gqa_data import GQADataset, gqa_feature_files
from tasks.nlvr2_data import NLVR2Dataset, nlvr2_feature_files
from tasks.synthetic import SyntheticConfig, generate
from tasks.vqa_data import VQADataset, vqa_feature_files

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = SyntheticConfig(seed=3, sizes=dict(coco_train_images=12, coco_val_images=10, minival_images=4,
                                           coco_test_images=4, vg_images=12, gqa_valid_images=4,
                                           gqa_submit_images=3, gqa_testdev_images=4, nlvr2_train_sets=4,
                                           nlvr2_valid_sets=2, nlvr2_test_sets=2))  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, SMALL, progress=False)
    return out


@pytest.fixture(scope="module")
def tok() -> LXRTTokenizer:
    return LXRTTokenizer()


def _records(root: Path, rel: str) -> list[dict]:
    return json.loads((root / rel).read_text())


def _copy_root(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(root, dst)
    return dst


# ---- answers ------------------------------------------------------------------------------------


def test_shipped_answer_tables() -> None:
    vqa = AnswerTable.for_task("vqa", REPO_DATA)
    gqa = AnswerTable.for_task("gqa", REPO_DATA)
    assert vqa.num_answers == 3129 and vqa.answer(0) == "" and vqa.ans2label["yes"] == vqa.label2ans.index("yes")
    assert gqa.num_answers == 1842
    table = PretrainAnswerTable(REPO_DATA / "lxmert" / "all_ans.json")
    assert table.num_answers == 9500
    assert table.answer(table.id("gray")) == "gray"
    counts = {s: PretrainAnswerTable(REPO_DATA / "lxmert" / "all_ans.json", [s]).num_answers for s in ("vqa", "gqa")}
    assert counts == {"vqa": 3124, "gqa": 1735}
    with pytest.raises(ValueError, match="unknown QA sets"):
        PretrainAnswerTable(REPO_DATA / "lxmert" / "all_ans.json", ["vqa", "coco"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("Two.", "2"),
        ("the man", "man"),
        ("A Woman", "woman"),
        ("a an the dog", "dog"),
        ("an apple", "apple"),
        ("grey", "gray"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("red.", "red"),
        ("theater", "theater"),
        (".", ""),
    ],
)
def test_convert_ans(raw: str, expected: str) -> None:
    assert convert_ans(raw) == expected


def test_target_vector() -> None:
    table = AnswerTable({"": 0, "yes": 1, "no": 2}, ["", "yes", "no"], source="t")
    vec = table.target({"yes": 1.0, "no": 0.3})
    assert vec.dtype == np.float32 and vec.tolist() == pytest.approx([0.0, 1.0, 0.3])
    assert table.target({"maybe": 1.0}, skip_unknown=True).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(DataFormatError, match="question 7: answer 'maybe' is not in t"):
        table.target({"maybe": 1.0}, where="question 7")


def test_answer_table_checks(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="label2ans has 1"):
        AnswerTable({"a": 0, "b": 1}, ["a"], source="x")
    with pytest.raises(DataFormatError, match=r"ans2label\['b'\] = 0 but label2ans\[0\] = 'a'"):
        AnswerTable({"a": 0, "b": 0}, ["a", "b"], source="x")
    bad = tmp_path / "trainval_ans2label.json"
    bad.write_text('{"a": 0,\n "b": 1,,}')
    (tmp_path / "trainval_label2ans.json").write_text('["a", "b"]')
    with pytest.raises(DataFormatError, match=r"trainval_ans2label.json:2:9: invalid JSON \(Expecting property"):
        AnswerTable.from_files(bad, tmp_path / "trainval_label2ans.json")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_json(tmp_path / "nothing.json")
    dup = tmp_path / "all_ans.json"
    dup.write_text(json.dumps([{"ans": "a", "dsets": ["vqa"]}, {"ans": "a", "dsets": ["gqa"]}]))
    with pytest.raises(DataFormatError, match="listed twice"):
        PretrainAnswerTable(dup)


# ---- split and feature-file rules ----------------------------------------------------------------


def test_split_and_subset_rules(tmp_path: Path) -> None:
    assert parse_splits("train, nominival") == ["train", "nominival"]
    with pytest.raises(ValueError):
        parse_splits("train,,valid")
    assert (subset_topk(), subset_topk(tiny=True), subset_topk(fast=True), subset_topk(True, True)) == (
        None, 512, 5000, 512,
    )  # fmt: skip
    coco = tmp_path / "mscoco_imgfeat"
    assert vqa_feature_files(["train", "minival"], tmp_path, None) == {
        coco / "train2014_obj36.tsv": None,
        coco / "val2014_obj36.tsv": 5000,
    }
    assert vqa_feature_files(["minival"], tmp_path, 512) == {coco / "val2014_obj36.tsv": 512}
    assert vqa_feature_files(["minival", "nominival"], tmp_path, None) == {coco / "val2014_obj36.tsv": None}
    assert vqa_feature_files(["test"], tmp_path, None) == {coco / "test2015_obj36.tsv": None}
    with pytest.raises(ValueError, match="VQA split 'dev'"):
        vqa_feature_files(["dev"], tmp_path, None)
    vg = tmp_path / "vg_gqa_imgfeat"
    assert gqa_feature_files(["train", "valid", "testdev"], tmp_path, 512) == {
        vg / "vg_gqa_obj36.tsv": 512,
        vg / "gqa_testdev_obj36.tsv": None,
    }
    assert gqa_feature_files(["submit"], tmp_path, None) == {vg / "vg_gqa_obj36.tsv": None}
    nl = tmp_path / "nlvr2_imgfeat"
    assert nlvr2_feature_files(["train", "valid", "test"], tmp_path, 5000) == {
        nl / "train_obj36.tsv": 5000,
        nl / "valid_obj36.tsv": 5000,
        nl / "test_obj36.tsv": 5000,
    }
    assert nlvr2_feature_files(["hidden"], tmp_path, None) == {nl / "hidden_obj36.tsv": None}  # --test hidden
    with pytest.raises(ValueError, match="NLVR2 split 'dev'"):
        nlvr2_feature_files(["dev"], tmp_path, None)


# ---- VQA ----------------------------------------------------------------------------------------


def test_vqa_dataset_and_collate(root: Path, tok: LXRTTokenizer) -> None:
    ds = VQADataset("train,nominival", root=root)
    expected = _records(root, "vqa/train.json") + _records(root, "vqa/nominival.json")
    assert len(ds) == len(expected) and ds.has_labels
    assert [r["question_id"] for r in ds.data] == [r["question_id"] for r in expected]
    assert len(ds.features.stores) == 2
    examples = [ds[0], ds[len(ds) - 1]]
    batch = ds.collator(tok)(examples)
    assert batch.ids == [examples[0]["question_id"], examples[1]["question_id"]]
    assert all(isinstance(i, int) for i in batch.ids)
    assert batch.input_ids.shape == (2, 20) and batch.input_ids.dtype == torch.int64
    assert batch.input_ids[0].tolist() == tok([examples[0]["sent"]]).input_ids[0].tolist()
    assert batch.feats.shape == (2, 36, SMALL.feat_dim) and batch.feats.dtype == torch.float32
    assert batch.boxes.shape == (2, 36, 4) and float(batch.boxes.min()) >= 0 and float(batch.boxes.max()) <= 1
    assert batch.visual_mask is None
    target = batch.targets["target"]
    assert target.shape == (2, ds.num_answers) and target.dtype == torch.float32
    for row, ex in enumerate(examples):
        for ans, score in ex["label"].items():
            assert target[row, ds.answers.ans2label[ans]].item() == pytest.approx(score)
        assert target[row].sum().item() == pytest.approx(sum(ex["label"].values()))
    # features come from the right TSV, in example order
    val = open_store(root / "mscoco_imgfeat" / "val2014_obj36.tsv")
    last = val.get(examples[1]["img_id"])
    np.testing.assert_allclose(batch.feats[1].numpy(), last.features.astype(np.float32))
    np.testing.assert_allclose(batch.boxes[1].numpy(), last.boxes)


def test_vqa_minival_subset_and_test_split(root: Path, tok: LXRTTokenizer) -> None:
    minival = VQADataset("minival", root=root)
    assert len(minival) == len(_records(root, "vqa/minival.json"))
    first_two = open_store(root / "mscoco_imgfeat" / "val2014_obj36.tsv").ids[:2]
    tiny = VQADataset("minival", root=root, topk=2)
    assert {r["img_id"] for r in tiny.data} == set(first_two)
    test = VQADataset("test", root=root)
    assert not test.has_labels
    batch = test.collator(tok)([test[0], test[1]])
    assert batch.targets == {}
    features = ImageFeatures({**minival.features.stores, **test.features.stores})
    with pytest.raises(ValueError, match="mixes"):
        QACollator(tok, features, minival.answers)([minival[0], test[0]])


def test_vqa_unknown_answer_is_an_error(root: Path, tmp_path: Path) -> None:
    data = _copy_root(root, tmp_path)
    records = _records(data, "vqa/train.json")
    records[5]["label"] = {"definitely not an answer": 1.0}
    (data / "vqa" / "train.json").write_text(json.dumps(records))
    qid = records[5]["question_id"]
    with pytest.raises(DataFormatError, match=rf"train.json: question_id {qid} has answer 'definitely not an answer'"):
        VQADataset("train", root=data)


def test_missing_images_dropped_logged_or_strict(root: Path, tmp_path: Path, caplog) -> None:
    data = _copy_root(root, tmp_path)
    records = _records(data, "vqa/train.json")
    records[2]["img_id"] = "COCO_train2014_999999999999"
    records[3]["img_id"] = "COCO_train2014_999999999998"
    (data / "vqa" / "train.json").write_text(json.dumps(records))
    with caplog.at_level(logging.INFO, logger="tasks.data_common"):
        ds = VQADataset("train", root=data)
    assert len(ds) == len(records) - 2
    assert "dropped 2 of" in caplog.text and "COCO_train2014_999999999999" in caplog.text
    with pytest.raises(MissingFeaturesError, match=r"train.json: question_id \d+ needs image 'COCO_train2014_99"):
        VQADataset("train", root=data, strict=True)


def test_bad_records_name_file_and_record(root: Path, tmp_path: Path) -> None:
    data = _copy_root(root, tmp_path)
    records = _records(data, "vqa/nominival.json")
    del records[1]["sent"]
    (data / "vqa" / "nominival.json").write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"nominival.json: record 1 has no 'sent' field"):
        VQADataset("nominival", root=data)
    records[1]["sent"] = "What?"
    records[1]["question_id"] = "12"
    (data / "vqa" / "nominival.json").write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"record 1 field 'question_id' is str '12', expected int"):
        VQADataset("nominival", root=data)
    (data / "vqa" / "nominival.json").write_text(json.dumps(records)[:-30])
    with pytest.raises(DataFormatError, match=r"nominival.json:1:\d+: invalid JSON .*looks truncated"):
        VQADataset("nominival", root=data)
    with pytest.raises(DataFormatError, match="also appears in"):
        VQADataset("train,train", root=data)


# ---- GQA ----------------------------------------------------------------------------------------


def test_gqa_dataset_skips_unknown_answers(root: Path, tmp_path: Path, tok: LXRTTokenizer) -> None:
    data = _copy_root(root, tmp_path)
    records = _records(data, "gqa/train.json")
    records[0]["label"] = {"an answer outside the table": 1.0}
    records[1]["label"] = {records[1]["label"].popitem()[0]: 1.0}
    (data / "gqa" / "train.json").write_text(json.dumps(records))
    ds = GQADataset("train,testdev", root=data)
    assert len(ds) == len(records) + len(_records(data, "gqa/testdev.json"))
    assert len(ds.features.stores) == 2
    batch = ds.collator(tok)([ds[0], ds[1], ds[len(ds) - 1]])
    assert batch.ids == [records[0]["question_id"], records[1]["question_id"], ds[len(ds) - 1]["question_id"]]
    assert all(isinstance(i, str) for i in batch.ids)
    target = batch.targets["target"]
    assert target.shape == (3, ds.num_answers)
    assert target[0].sum().item() == 0.0
    assert target[1, ds.answers.ans2label[next(iter(records[1]["label"]))]].item() == 1.0
    submit = GQADataset("submit", root=data)
    assert not submit.has_labels and submit.collator(tok)([submit[0]]).targets == {}


# ---- NLVR2 --------------------------------------------------------------------------------------


def test_nlvr2_pairs_layout(root: Path, tok: LXRTTokenizer) -> None:
    ds = NLVR2Dataset("train", root=root)
    assert len(ds) == len(_records(root, "nlvr2/train.json"))
    ex = [ds[0], ds[1], ds[2]]
    batch = ds.collator(tok)(ex)
    assert batch.ids == [e["identifier"] for e in ex] and len(batch) == 3
    assert batch.input_ids.shape == (6, 20) and batch.feats.shape == (6, 36, SMALL.feat_dim)
    sents = tok([e["sent"] for e in ex]).input_ids
    store = open_store(root / "nlvr2_imgfeat" / "train_obj36.tsv")
    for i, e in enumerate(ex):
        assert torch.equal(batch.input_ids[2 * i], sents[i]) and torch.equal(batch.input_ids[2 * i + 1], sents[i])
        for j, key in enumerate(("img0", "img1")):
            np.testing.assert_allclose(batch.feats[2 * i + j].numpy(), store.get(e[key]).features.astype(np.float32))
    assert batch.targets["label"].dtype == torch.int64
    assert batch.targets["label"].tolist() == [e["label"] for e in ex]


def test_nlvr2_drops_examples_missing_one_image(root: Path, tmp_path: Path) -> None:
    data = _copy_root(root, tmp_path)
    records = _records(data, "nlvr2/valid.json")
    records[0]["img1"] = "dev-0-0-img9"
    (data / "nlvr2" / "valid.json").write_text(json.dumps(records))
    assert len(NLVR2Dataset("valid", root=data)) == len(records) - 1
    records[0]["label"] = 2
    (data / "nlvr2" / "valid.json").write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"valid.json: record 0 \(dev-.*\) has label 2, expected 0 or 1"):
        NLVR2Dataset("valid", root=data)


def test_image_features_over_several_stores(root: Path) -> None:
    a = open_store(root / "mscoco_imgfeat" / "train2014_obj36.tsv")
    b = open_store(root / "mscoco_imgfeat" / "val2014_obj36.tsv")
    both = ImageFeatures({"a": a, "b": b})
    ids = [b.ids[1], a.ids[0], b.ids[0], a.ids[3]]
    feats, boxes, mask = both.gather(ids)
    assert mask is None and feats.shape == (4, 36, SMALL.feat_dim)
    for row, img_id in enumerate(ids):
        src = a if img_id in a else b
        np.testing.assert_array_equal(feats[row], src.get(img_id).features.astype(np.float32))
        np.testing.assert_array_equal(boxes[row], src.get(img_id).boxes)
    with pytest.raises(MissingFeaturesError, match="'nope'"):
        both.gather(["nope", a.ids[0]])
