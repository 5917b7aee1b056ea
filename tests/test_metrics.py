"""Metrics (original evaluators, official VQA accuracy, NLVR2 consistency) and submission files."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tasks.gqa import write_gqa_submission
from tasks.metrics import (
    exact_match_accuracy,
    gqa_accuracy,
    metric,
    normalize_vqa_answer,
    oracle_accuracy,
    register_metric,
    soft_score_accuracy,
    vqa_accuracy,
    vqa_official_accuracy,
    vqa_official_score,
)
from tasks.nlvr2 import nlvr2_accuracy, nlvr2_consistency, nlvr2_sentence_id, write_nlvr2_predictions
from tasks.submission import dump_predictions, prediction_path, register_writer, write_predictions
from tasks.vqa import write_vqa_submission


def test_vqa_soft_score_accuracy() -> None:
    labels = {1: {"2": 1.0, "3": 0.3}, 2: {"yes": 0.9}, 3: {"red": 0.6}, 4: {}}
    preds = {1: "3", 2: "yes", 3: "blue", 4: "no"}
    assert vqa_accuracy(preds, labels) == pytest.approx((0.3 + 0.9 + 0 + 0) / 4)
    assert oracle_accuracy(labels) == pytest.approx((1.0 + 0.9 + 0.6 + 0) / 4)
    with pytest.raises(KeyError, match="no label"):
        vqa_accuracy({9: "x"}, labels)
    with pytest.raises(ValueError, match="no predictions"):
        vqa_accuracy({}, labels)


def test_gqa_exact_match() -> None:
    labels = {"01": {"pipe": 1.0}, "02": {"left": 1.0}, "03": {"no": 1.0}}
    assert gqa_accuracy({"01": "pipe", "02": "right", "03": "no"}, labels) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_official_accuracy_levels(matches: int, expected: float) -> None:
    others = ["cat", "dog", "bird", "fish", "cow", "horse", "sheep", "goat", "pig", "duck"]
    humans = ["zebra"] * matches + others[: 10 - matches]
    assert vqa_official_accuracy("zebra", humans) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),
        ("The dog.", "dog"),
        ("a red ball", "red ball"),
        ("an apple", "apple"),
        ("The Apple", "apple"),
        ("a", ""),
        ("dont know", "don't know"),
        ("yes!", "yes"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("left - right", "left right"),
        ("t-shirt", "t shirt"),
        ("  none\t", "0"),
        ("isnt it", "isn't it"),
    ],
)
def test_vqa_answer_normalization(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


def test_official_metric_details() -> None:
    # humans agree: nothing is normalized, so the number word does not match (the tool's rule)
    assert vqa_official_accuracy("two", ["2"] * 10) == pytest.approx(0.0)
    assert vqa_official_accuracy("2", ["2"] * 10) == pytest.approx(1.0)
    # humans disagree: both sides get punctuation then digit/article processing
    assert vqa_official_accuracy("t-shirt", ["t-shirt"] * 2 + ["shirt"] * 8) == pytest.approx(0.6)
    assert vqa_official_accuracy("yes", ["yes!", "yes", "yes"] + ["no"] * 7) == pytest.approx(0.9)
    assert vqa_official_accuracy("2", ["two"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    preds = {10: "Yes", 11: "red"}
    gts = {10: ["yes"] * 10, 11: ["red", "red", "blue"] + ["green"] * 7}
    assert vqa_official_score(preds, gts) == pytest.approx((0.0 + 0.6) / 2)
    with pytest.raises(ValueError):
        vqa_official_accuracy("x", [])


def test_nlvr2_accuracy_and_consistency() -> None:
    labels = {
        "dev-1-0-0": 1, "dev-1-1-0": 0,  # sentence dev-1--0: both right below
        "dev-1-2-1": 1, "dev-1-3-1": 1,  # sentence dev-1--1: one wrong
        "dev-7-0-0": 0,  # sentence dev-7--0: wrong
    }  # fmt: skip
    preds = {"dev-1-0-0": 1, "dev-1-1-0": False, "dev-1-2-1": True, "dev-1-3-1": 0, "dev-7-0-0": 1}
    assert nlvr2_sentence_id("dev-850-0-0") == "dev-850--0"
    assert nlvr2_sentence_id("test1-850-3-1") == "test1-850--1"
    assert nlvr2_accuracy(preds, labels) == pytest.approx(3 / 5)
    assert nlvr2_consistency(preds, labels) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="expected 0/1"):
        nlvr2_accuracy({"dev-1-0-0": 2}, labels)
    with pytest.raises(ValueError, match="split-set-pair-sentence"):
        nlvr2_sentence_id("dev-850")


def test_vqa_submission_format(tmp_path: Path) -> None:
    path = write_vqa_submission({458752000: "net", 12: "2"}, tmp_path / "out" / "test_predict.json")
    text = path.read_text()
    assert json.loads(text) == [{"answer": "net", "question_id": 458752000}, {"answer": "2", "question_id": 12}]
    assert text == json.dumps(json.loads(text), indent=4, sort_keys=True)
    assert text.index('"answer"') < text.index('"question_id"')
    assert sorted(p.name for p in path.parent.iterdir()) == ["test_predict.json"]  # no temp files left
    with pytest.raises(TypeError, match="int"):
        write_vqa_submission({"12": "2"}, tmp_path / "x.json")
    with pytest.raises(ValueError, match="1 of 3 questions have no prediction"):
        write_vqa_submission({1: "a", 2: "b"}, tmp_path / "x.json", expected=[1, 2, 3])
    assert not (tmp_path / "x.json").exists()


def test_gqa_submission_format(tmp_path: Path) -> None:
    path = write_gqa_submission({"07333408": "pipe", "201307251": "no"}, tmp_path / "submit_predict.json")
    rows = json.loads(path.read_text())
    assert rows == [{"prediction": "pipe", "questionId": "07333408"}, {"prediction": "no", "questionId": "201307251"}]
    assert path.read_text() == json.dumps(rows, indent=4, sort_keys=True)
    with pytest.raises(TypeError, match="string"):
        write_gqa_submission({7333408: "pipe"}, tmp_path / "y.json")


def test_nlvr2_csv(tmp_path: Path) -> None:
    path = write_nlvr2_predictions({"test1-0-1-0": 1, "test1-0-1-1": 0, "test1-3-0-0": True}, tmp_path / "t.csv")
    assert path.read_text() == "test1-0-1-0,True\ntest1-0-1-1,False\ntest1-3-0-0,True\n"
    with pytest.raises(ValueError, match="0/1"):
        write_nlvr2_predictions({"a-1-1-1": 3}, tmp_path / "u.csv")


def test_prediction_paths_and_dump(tmp_path: Path) -> None:
    assert prediction_path(tmp_path, "minival", "vqa") == tmp_path / "minival_predict.json"
    assert prediction_path(tmp_path, "valid", "nlvr2") == tmp_path / "valid_predict.csv"
    with pytest.raises(ValueError, match="unknown task"):
        prediction_path(tmp_path, "x", "coco")
    path = write_predictions("gqa", {"1": "yes"}, tmp_path, "testdev")
    assert path.name == "testdev_predict.json" and json.loads(path.read_text())[0]["questionId"] == "1"
    dumped = dump_predictions({3: "red", 1: "blue"}, tmp_path / "dump.json")
    assert json.loads(dumped.read_text()) == {"1": "blue", "3": "red"}


def test_exact_match_and_the_registries(tmp_path: Path) -> None:
    labels = {"a": "entailment", "b": "x", 3: 1, "unpredicted": "neutral"}
    assert exact_match_accuracy({"a": "entailment", "b": "neutral", 3: 1}, labels) == 2 / 3
    with pytest.raises(KeyError, match="have no label"):
        exact_match_accuracy({"a": "x"}, {"b": "x"})
    assert metric("exact_match") is exact_match_accuracy and metric("soft_score") is soft_score_accuracy
    with pytest.raises(KeyError, match="unknown metric 'bleu'"):
        metric("bleu")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("exact_match")(lambda p, labels: 0.0)
    with pytest.raises(ValueError, match="already registered"):
        register_writer("vqa", ".csv")(write_vqa_submission)


def test_nlvr2_labels_may_be_the_strings_true_and_false() -> None:
    """The original's NLVR2 files and CSVs say "True"/"False"; 0/1 and booleans mean the same; anything else
    (lower case included) is an error naming the example."""
    labels = {"dev-1-0-0": "True", "dev-1-1-0": "False", "dev-2-0-0": 1, "dev-2-1-0": False}
    preds = {"dev-1-0-0": 1, "dev-1-1-0": "False", "dev-2-0-0": "True", "dev-2-1-0": "True"}
    assert nlvr2_accuracy(preds, labels) == 3 / 4
    assert nlvr2_consistency(preds, labels) == 1 / 2
    assert nlvr2_accuracy({"dev-1-0-0": True, "dev-1-1-0": 0}, labels) == 1.0
    for bad in ("true", "TRUE", "false", "maybe", 2, None):
        with pytest.raises(ValueError, match=rf"dev-1-0-0: expected 0/1, True/False, got {re.escape(repr(bad))}"):
            nlvr2_accuracy({"dev-1-0-0": bad}, labels)


def test_metric_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="^no predictions to score$"):
        soft_score_accuracy({}, {1: {"yes": 1.0}})
    with pytest.raises(KeyError) as err:
        metric("bleu")
    known = str(err.value).strip("\"").split("; known: ")[1].split(", ")
    assert "exact_match" in known and "soft_score" in known and all(metric(name) for name in known)
    with pytest.raises(ValueError, match="^no labels$"):
        oracle_accuracy({})
    with pytest.raises(ValueError, match="^no human answers to score against$"):
        vqa_official_accuracy("yes", [])
    with pytest.raises(ValueError, match=r"^human answer 1 is 3, expected a string$"):
        vqa_official_accuracy("yes", ["yes", 3])
    with pytest.raises(ValueError, match=r"^human answer 0 is None, expected a string$"):
        vqa_official_accuracy("yes", [{"answer_id": 1}])


def test_oracle_counts_only_answers_in_the_table() -> None:
    labels = {1: {"cat": 0.3, "dog": 1.0}, 2: {"zebra": 1.0}, 3: {"cat": 0.6}}
    assert oracle_accuracy(labels) == pytest.approx((1.0 + 1.0 + 0.6) / 3)
    assert oracle_accuracy(labels, {"cat"}) == pytest.approx((0.3 + 0.0 + 0.6) / 3)
    assert oracle_accuracy(labels, {"dog", "cat"}) == pytest.approx((1.0 + 0.6) / 3)


def share_of_yes(predictions, labels) -> float:
    return sum(p == "yes" for p in predictions.values()) / len(predictions)


def test_registering_a_new_metric_and_the_same_one_again() -> None:
    name = f"test_share_of_yes_{uuid.uuid4().hex}"  # new in every run, also in a process that ran it before
    assert register_metric(name)(share_of_yes) is share_of_yes
    assert register_metric(name)(share_of_yes) is share_of_yes  # the same function again: no error
    assert metric(name) is share_of_yes and metric(name)({1: "yes", 2: "no"}, {}) == 0.5
    owner = re.escape(share_of_yes.__module__)  # the message names the module that registered the name first
    with pytest.raises(ValueError, match=f"^metric '{name}' is already registered \\({owner}\\)$"):
        register_metric(name)(lambda p, labels: 0.0)


def test_newlines_and_tabs_inside_an_answer_are_spaces() -> None:
    """The tool replaces them even when it normalizes nothing else (identical human answers)."""
    assert vqa_official_accuracy("red\nball", ["red ball"] * 10) == 1.0
    assert vqa_official_accuracy("red\tball", ["red ball"] * 10) == 1.0
    assert vqa_official_accuracy("red ball", ["red\tball"] * 5 + ["red\nball"] * 5) == 1.0
    assert vqa_official_accuracy("redball", ["red\nball"] * 10) == 0.0


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("t-shirt -x", "tshirt x"),  # " -" somewhere in the text: every "-" is deleted
        ("t-shirt- x", "tshirt x"),  # "- " somewhere: the same
        ("t-shirt-x", "t shirt x"),  # no mark touches a space: each becomes a space
        ("t-shirt, 1,000", "tshirt 1000"),  # a digit,digit group deletes every mark
    ],
)
def test_a_mark_touching_a_space_anywhere_is_deleted_everywhere(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized
