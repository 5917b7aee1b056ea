"""Server splits are written whole: which splits count, what the refusal says, what ``--allow-missing`` writes.

The runs end to end are in test_run_safety.py; here each rule is pinned on a small stand-in dataset (the
few attributes the checks read: splits, records, dropped records, id and image keys, feature files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.task import Task
from tasks.completeness import (
    IncompleteSubmissionError,
    check_server_split,
    is_server_split,
    note_incomplete,
    submission_ids,
    write_missing_list,
)
from tasks.registry import task_class

VQA, GQA, NLVR2 = task_class("vqa"), task_class("gqa"), task_class("nlvr2")


@dataclass
class Features:
    have: set[str]
    stores: list[Path]

    def __contains__(self, image: object) -> bool:
        return image in self.have


@dataclass
class Dataset:
    splits: list[str]
    data: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    features: Features
    id_key: str = "question_id"
    image_keys: tuple[str, ...] = ("img_id",)
    name: str = ""
    split_of: dict[Any, str] = field(default_factory=dict)


def vqa_test(kept: int = 3, missing: int = 2, split: str = "test") -> Dataset:
    data = [{"question_id": i, "img_id": f"img{i}"} for i in range(kept)]
    dropped = [{"question_id": 100 + i, "img_id": f"gone{i}"} for i in range(missing)]
    features = Features({r["img_id"] for r in data}, [Path("feats/a_obj36.tsv"), Path("feats/b_obj36.tsv")])
    return Dataset([split], data, dropped, features, name=split)


@pytest.mark.parametrize(
    ("task", "split", "server"),
    [
        ("vqa", "test", True), ("vqa", "minival", False), ("vqa", "submit", False),
        ("gqa", "submit", True), ("gqa", "testdev", False), ("gqa", "test", False),
        ("nlvr2", "test", True), ("nlvr2", "hidden", True), ("nlvr2", "valid", False),
        ("snli_ve", "test", False), ("task", "test", False),
    ],
)  # fmt: skip
def test_which_splits_go_to_an_evaluation_server(task: str, split: str, server: bool) -> None:
    """Each task's own ``server_splits`` decide; a task that declares none (the ``Task`` default) has none."""
    cls = Task if task == "task" else task_class(task)
    assert is_server_split(cls, split) is server


def test_a_server_split_with_missing_features_is_refused_with_the_ids_and_files(tmp_path: Path) -> None:
    ds = vqa_test()
    with pytest.raises(IncompleteSubmissionError) as err:
        check_server_split(VQA, ds, allow_missing=False, output_dir=tmp_path)
    listed = tmp_path / "test_missing.txt"
    assert str(err.value) == (
        "vqa test: 2 of 5 question_ids have no image features in feats/a_obj36.tsv, feats/b_obj36.tsv: "
        f"100 (image gone0), 101 (image gone1); all of them are listed in {listed}. The evaluation server "
        "scores missing questions as wrong, so no submission is written. Use the complete feature file for "
        "this split, or pass --allow-missing to write the other predictions anyway."
    )
    assert listed.read_text() == "100\tgone0\n101\tgone1\n"
    with pytest.raises(IncompleteSubmissionError, match=r"have no image features in .*: 100 \(image gone0\), 101 "
                       r"\(image gone1\)\. The evaluation"):  # fmt: skip
        check_server_split(VQA, ds, allow_missing=False)  # no folder: nothing listed


def test_only_ten_missing_ids_are_named() -> None:
    ds = vqa_test(kept=1, missing=13)
    with pytest.raises(IncompleteSubmissionError) as err:
        check_server_split(VQA, ds, allow_missing=False)
    message = str(err.value)
    assert "13 of 14" in message and "109 (image gone9), ... (3 more)." in message and "110 (" not in message


def test_missing_features_elsewhere_are_not_a_submission_problem(tmp_path: Path) -> None:
    check_server_split(VQA, vqa_test(split="minival"), allow_missing=False, output_dir=tmp_path)
    check_server_split(GQA, vqa_test(split="testdev"), allow_missing=False, output_dir=tmp_path)
    check_server_split(VQA, vqa_test(missing=0), allow_missing=False, output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # several splits in one dataset: only the server split's own dropped records count
    ds = vqa_test(split="test")
    ds.splits = ["minival", "test"]
    ds.split_of = {100: "minival", 101: "minival", 0: "test", 1: "minival", 2: "test"}
    check_server_split(VQA, ds, allow_missing=False)
    ds.split_of[101] = "test"
    with pytest.raises(IncompleteSubmissionError, match=r"vqa test: 1 of 3 question_ids .*: 101 \(image gone1\)\."):
        check_server_split(VQA, ds, allow_missing=False)


def test_an_nlvr2_record_names_only_its_missing_image(tmp_path: Path) -> None:
    rec = {"identifier": "test1-0-1-0", "img0": "test1-0-1-img0", "img1": "test1-0-1-img1"}
    features = Features({"test1-0-1-img0"}, [Path("test_obj36.tsv")])
    ds = Dataset(["hidden"], [], [rec], features, id_key="identifier", image_keys=("img0", "img1"), name="hidden")
    with pytest.raises(IncompleteSubmissionError, match=r"^nlvr2 hidden: 1 of 1 identifiers .*'test1-0-1-0' "
                       r"\(image test1-0-1-img1\)"):  # fmt: skip
        check_server_split(NLVR2, ds, allow_missing=False, output_dir=tmp_path)
    listed = write_missing_list(ds, [rec], tmp_path / "x.txt")
    assert listed.read_text() == "test1-0-1-0\ttest1-0-1-img0,test1-0-1-img1\n"


def test_allow_missing_warns_and_the_submission_holds_what_it_can(tmp_path: Path, caplog) -> None:
    ds = vqa_test()
    with caplog.at_level(logging.WARNING):
        check_server_split(VQA, ds, allow_missing=True, output_dir=tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert "--allow-missing: the test submission will LACK 2 of 5 questions" in messages
    assert any(m.startswith("vqa test: 2 of 5 question_ids have no image features") for m in messages)
    assert messages.count("=" * 78) == 2
    assert (tmp_path / "test_missing.txt").is_file()
    assert submission_ids(VQA, ds, allow_missing=True) == [0, 1, 2]
    assert submission_ids(VQA, ds, allow_missing=False) == [0, 1, 2, 100, 101]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        note_incomplete(VQA, ds, tmp_path / "test_predict.json")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'test_predict.json'} LACKS 2 of 5 questions (no image features, --allow-missing); "
        "they are listed in <split>_missing.txt beside it"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        note_incomplete(VQA, vqa_test(split="minival"), tmp_path / "minival_predict.json")
        note_incomplete(VQA, vqa_test(missing=0), tmp_path / "test_predict.json")
    assert caplog.records == []


def test_exactly_ten_ids_are_named_whole_and_both_missing_images() -> None:
    with pytest.raises(IncompleteSubmissionError) as err:
        check_server_split(VQA, vqa_test(kept=1, missing=10), allow_missing=False)
    assert "109 (image gone9). The evaluation" in str(err.value) and "more)" not in str(err.value)
    rec = {"identifier": "test1-0-1-0", "img0": "a0", "img1": "a1"}
    ds = Dataset(["test"], [], [rec], Features(set(), [Path("t.tsv")]), id_key="identifier",
                 image_keys=("img0", "img1"), name="test")  # fmt: skip
    with pytest.raises(IncompleteSubmissionError, match=r"'test1-0-1-0' \(image a0 \+ a1\)\."):
        check_server_split(NLVR2, ds, allow_missing=False)


class Bare:
    """A dataset of one split without the optional ``split_of`` and ``dropped`` attributes."""

    splits = ["test"]
    name = "test"
    id_key = "question_id"
    image_keys = ("img_id",)
    data = [{"question_id": 1, "img_id": "i1"}]
    features = Features({"i1"}, [Path("f.tsv")])


def test_optional_attributes_and_a_server_split_after_another(tmp_path: Path, caplog) -> None:
    check_server_split(VQA, Bare(), allow_missing=False)  # nothing dropped, no split map: complete
    note_incomplete(VQA, Bare(), tmp_path / "test_predict.json")
    assert submission_ids(VQA, Bare(), allow_missing=False) == [1]
    ds = vqa_test()
    ds.splits = ["minival", "test"]  # the server split comes second
    with pytest.raises(IncompleteSubmissionError, match="vqa test: 2 of 5"):
        check_server_split(VQA, ds, allow_missing=False)
    ds.split_of = {100: "minival", 101: "test"}  # one of the two dropped records belongs to minival
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        note_incomplete(VQA, ds, tmp_path / "test_predict.json")
    assert [r.getMessage().split(" (no image")[0] for r in caplog.records] == [
        f"{tmp_path / 'test_predict.json'} LACKS 1 of 4 questions"
    ]


def test_dropped_records_without_a_split_map_and_a_second_server_split(tmp_path: Path, caplog) -> None:
    class NoSplitMap(Bare):
        dropped = [{"question_id": 7, "img_id": "gone"}]

    with pytest.raises(IncompleteSubmissionError, match=r"vqa test: 1 of 2 question_ids .*: 7 \(image gone\)\."):
        check_server_split(VQA, NoSplitMap(), allow_missing=False)
    with caplog.at_level(logging.WARNING):
        note_incomplete(VQA, NoSplitMap(), tmp_path / "test_predict.json")
    assert "LACKS 1 of 2 questions" in caplog.records[0].getMessage()
    rec = {"identifier": "h-1-0-0", "img0": "a0", "img1": "a1"}
    ds = Dataset(["test", "hidden"], [], [rec], Features(set(), [Path("h.tsv")]), id_key="identifier",
                 image_keys=("img0", "img1"), split_of={"h-1-0-0": "hidden"})  # fmt: skip
    with pytest.raises(IncompleteSubmissionError, match=r"^nlvr2 hidden: 1 of 1 identifiers"):  # test is complete
        check_server_split(NLVR2, ds, allow_missing=False)
