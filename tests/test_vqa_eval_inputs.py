"""``python -m tasks.vqa_eval``: what each kind of bad input file says, the subset options, the multiple-choice
check, the printed report and the help. (Scores against the tool's rules: test_vqa_eval.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.answers import DataFormatError
from tasks.vqa_eval import (
    VQAEvalError,
    build_parser,
    evaluate,
    load_annotations,
    load_predictions,
    load_question_ids,
    load_questions,
    main,
    report_text,
)


def ann(qid: int, answers: list[str], qtype: str = "what is", atype: str = "other") -> dict:
    return {"question_id": qid, "question_type": qtype, "answer_type": atype,
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]}  # fmt: skip


GOOD = ann(1, ["red"] * 10)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([GOOD], "expected an object with an 'annotations' list (official VQA annotations)"),
        ({"annotations": {}}, "expected an object with an 'annotations' list (official VQA annotations)"),
        ({"annotations": [GOOD, 3]}, "annotation 1 is int, expected an object"),
        ({"annotations": [{**GOOD, "question_id": "1"}]}, "annotation 0 has question_id '1', expected an integer"),
        ({"annotations": [{**GOOD, "question_id": True}]}, "annotation 0 has question_id True, expected an integer"),
        ({"annotations": [GOOD, GOOD]}, "annotation 1: question_id 1 appears twice"),
        ({"annotations": [{**GOOD, "question_type": None}]},
         "annotation 0 (question_id 1) has question_type None, expected a string"),
        ({"annotations": [{**GOOD, "answer_type": 5}]},
         "annotation 0 (question_id 1) has answer_type 5, expected a string"),
        ({"annotations": [{**GOOD, "answers": []}]}, "annotation 0 (question_id 1) has no 'answers' list"),
        ({"annotations": [{**GOOD, "answers": "red"}]}, "annotation 0 (question_id 1) has no 'answers' list"),
        ({"annotations": [{**GOOD, "answers": [{"answer": "red"}, {"answer": 2}]}]},
         "annotation 0 (question_id 1): answer 1 is not an object with an answer string"),
        ({"annotations": [{**GOOD, "answers": ["red"]}]},
         "annotation 0 (question_id 1): answer 0 is not an object with an answer string"),
    ],
)  # fmt: skip
def test_bad_annotation_files_name_the_record(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "anns.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataFormatError) as err:
        load_annotations(path)
    assert str(err.value) == f"{path}: {message}"


def test_bad_question_prediction_and_subset_files(tmp_path: Path) -> None:
    path = tmp_path / "f.json"

    def error(loader, content: object) -> str:
        path.write_text(json.dumps(content))
        with pytest.raises(DataFormatError) as err:
            loader(path)
        return str(err.value)

    official = "expected an object with a 'questions' list (official VQA questions)"
    assert error(load_questions, [{"question_id": 1}]) == f"{path}: {official}"
    assert error(load_questions, {"questions": {"question_id": 1}}) == f"{path}: {official}"
    no_id = "has no integer question_id"
    assert error(load_questions, {"questions": [{"question_id": 1}, 7]}) == f"{path}: question 1 {no_id}"
    assert error(load_questions, {"questions": [{"question_id": "1"}]}) == f"{path}: question 0 {no_id}"
    path.write_text(json.dumps({"task_type": "Multiple Choice", "questions": [
        {"question_id": 1, "multiple_choices": ["red", "blue"]}, {"question_id": 2}]}))  # fmt: skip
    assert load_questions(path) == ({1, 2}, {1: ["red", "blue"]}, "Multiple Choice")
    path.write_text(json.dumps({"questions": []}))
    assert load_questions(path) == (set(), {}, "")

    array = "results is not an array of objects (expected [{question_id, answer}])"
    assert error(load_predictions, {"question_id": 1}) == f"{path}: {array}"
    assert error(load_predictions, [{"question_id": 1, "answer": "a"}, "b"]) == (
        f"{path}: result 1 is str, expected an object")  # fmt: skip
    assert error(load_predictions, [{"question_id": 1.0, "answer": "a"}]) == (
        f"{path}: result 0 has question_id 1.0, expected an integer")  # fmt: skip
    assert error(load_predictions, [{"question_id": 3, "answer": 4}]) == (
        f"{path}: result 0 (question_id 3) has answer 4, expected a string")  # fmt: skip
    rows = [{"question_id": 3, "answer": "a"}, {"question_id": 4, "answer": "b"}, {"question_id": 3, "answer": "c"}]
    assert error(load_predictions, rows) == f"{path}: question_id 3 is predicted twice (results 0, 2)"
    path.write_text(json.dumps(rows[:2]))
    assert load_predictions(path) == ({3: "a", 4: "b"}, [3, 4])

    listed = "expected a JSON list of question ids or of records with question_id"
    assert error(load_question_ids, {"question_id": 1}) == f"{path}: {listed}"
    no_id = "has no integer question id"
    assert error(load_question_ids, [5, {"question_id": 6}, "7"]) == f"{path}: entry 2 {no_id}"
    assert error(load_question_ids, [5, {"qid": 6}]) == f"{path}: entry 1 {no_id}"
    path.write_text(json.dumps([9, {"question_id": 8, "sent": "?"}]))
    assert load_question_ids(path) == [9, 8]


def test_evaluate_errors_name_the_ids() -> None:
    anns = [ann(i, ["red"] * 10) for i in range(1, 9)]
    preds = {i: "red" for i in range(1, 9)}
    with pytest.raises(VQAEvalError) as err:
        evaluate(anns, {**preds, 20: "x", 21: "x", 22: "x", 23: "x", 24: "x", 25: "x"}, source="p.json")
    first = "(first: 20, 21, 22, 23, 24, ...)"
    assert str(err.value) == f"p.json: 6 predicted question ids are not in the annotations {first}"
    with pytest.raises(VQAEvalError) as err:
        evaluate(anns, preds, question_ids=[1, 30, 31])
    assert str(err.value) == "2 question ids to score have no annotation (first: 30, 31)"
    with pytest.raises(VQAEvalError) as err:
        evaluate(anns, {1: "red"}, question_ids=[1, 2, 3], source="p.json")
    assert str(err.value) == "p.json: 2 of 3 questions have no prediction (first: 2, 3)"  # a subset given: no hint
    with pytest.raises(VQAEvalError) as err:
        evaluate(anns, {1: "red"}, source="p.json")
    assert str(err.value) == (
        "p.json: 7 of 8 questions have no prediction (first: 2, 3, 4, 5, 6, ...); the official tool scores every "
        "question of the annotation file: to score a subset such as minival pass --question-ids "
        "data/vqa/minival.json (or --only-predicted)"
    )
    with pytest.raises(VQAEvalError, match="^no questions to score$"):
        evaluate(anns, {}, question_ids=[])
    assert evaluate(anns, preds, question_ids=[3, 1])["overall"] == 100.0


def test_types_ndigits_and_the_printed_report() -> None:
    anns = [ann(1, ["red"] * 10, "what color", "other"), ann(2, ["2"] * 10, "how many", "number"),
            ann(3, ["yes"] * 10, "is the", "yes/no")]  # fmt: skip
    result = evaluate(anns, {1: "red", 2: "3", 3: "yes"}, ndigits=3)
    assert result == {"overall": 66.667, "perQuestionType": {"how many": 0.0, "is the": 100.0, "what color": 100.0},
                      "perAnswerType": {"number": 0.0, "other": 100.0, "yes/no": 100.0}}  # fmt: skip
    assert evaluate(anns, {1: "red", 2: "3", 3: "yes"})["overall"] == 66.67
    assert report_text(result) == (
        "Overall Accuracy is: 66.67\n\nPer Question Type Accuracy is the following:\nhow many : 0.00\n"
        "is the : 100.00\nwhat color : 100.00\n\nPer Answer Type Accuracy is the following:\nnumber : 0.00\n"
        "other : 100.00\nyes/no : 100.00\n"
    )


def _files(tmp_path: Path, task_type: str = "Open-Ended", questions: list[int] = (1, 2, 3), choices=None):
    anns = [ann(1, ["red"] * 10), ann(2, ["blue"] * 10), ann(3, ["green"] * 10)]
    (tmp_path / "a.json").write_text(json.dumps({"annotations": anns}))
    choices = choices or {}
    qs = [{"question_id": q, **({"multiple_choices": choices[q]} if q in choices else {})} for q in questions]
    (tmp_path / "q.json").write_text(json.dumps({"task_type": task_type, "questions": qs}))
    return ["--annotations", str(tmp_path / "a.json"), "--questions", str(tmp_path / "q.json")]


def test_command_subsets_multiple_choice_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps([{"question_id": 3, "answer": "green"}, {"question_id": 1, "answer": "blue"}]))
    args = [*_files(tmp_path), "--predictions", str(preds)]
    assert main([*args, "--only-predicted", "--ndigits", "1"]) == 0
    assert json.loads((tmp_path / "p_vqa_eval.json").read_text())["overall"] == 50.0
    out = capsys.readouterr().out
    assert out.startswith("Overall Accuracy is: 50.00\n") and out.endswith(f"wrote {tmp_path / 'p_vqa_eval.json'}\n")
    (tmp_path / "ids.json").write_text("[3]")
    assert main([*args, "--question-ids", str(tmp_path / "ids.json"), "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["overall"] == 100.0
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the two subset options exclude each other
        main([*args, "--only-predicted", "--question-ids", str(tmp_path / "ids.json")])
    assert "not allowed with argument" in capsys.readouterr().err

    args = [*_files(tmp_path, questions=[1, 2]), "--predictions", str(preds), "--only-predicted"]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'q.json'}: 1 scored questions are not in the question file (first: 3); are annotations "
        "and questions of the same split?\n"
    )
    choices = {1: ["red", "green"], 3: ["green", "red"]}
    args = [*_files(tmp_path, "Multiple Choice", choices=choices), "--predictions", str(preds), "--only-predicted"]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"error: {preds}: predicted answer is not one of the multiple choices for question 1 (1 such questions)\n"
    )
    args = [*_files(tmp_path, "Open-Ended", choices=choices), "--predictions", str(preds), "--only-predicted"]
    assert main(args) == 0  # open-ended: the choices are not checked
    assert main([*_files(tmp_path), "--predictions", str(tmp_path / "none.json")]) == 1
    assert "none.json" in capsys.readouterr().err


def test_help_documents_every_option() -> None:
    text = " ".join(build_parser().format_help().split())
    for phrase in (
        "usage: python -m tasks.vqa_eval",
        "Official VQA accuracy (overall, per answer type, per question type) of a result file, as the VQA "
        "evaluation tool computes it.",
        "--annotations ANNOTATIONS official annotations, e.g. v2_mscoco_val2014_annotations.json",
        "--questions QUESTIONS official questions, e.g. v2_OpenEnded_mscoco_val2014_questions.json",
        "--predictions PREDICTIONS result file [{question_id, answer}], e.g. snap/vqa/NAME/minival_predict.json",
        "--question-ids QUESTION_IDS score only these questions: a JSON list of ids or of records with "
        "question_id (e.g. data/vqa/minival.json)",
        "--only-predicted score only the predicted questions",
        "--out OUT JSON file for the accuracies (default: beside the predictions, <name>_vqa_eval.json)",
        "--ndigits NDIGITS decimals of the rounded accuracies (the tool's n)",
    ):
        assert phrase in text, phrase
    args = build_parser().parse_args(["--annotations", "a", "--questions", "q", "--predictions", "p"])
    assert (args.ndigits, args.only_predicted, args.question_ids, args.out) == (2, False, None, None)
    assert all(isinstance(p, Path) for p in (args.annotations, args.questions, args.predictions))
    for missing in ("--annotations", "--questions", "--predictions"):
        argv = ["--annotations", "a", "--questions", "q", "--predictions", "p"]
        i = argv.index(missing)
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv[:i] + argv[i + 2 :])


def test_command_passes_its_settings_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--ndigits reaches the scores, the error names the prediction file, only the scored questions must be in
    the question file, the JSON is indented, and stdout is the report then the path."""
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps([{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "x"},
                                 {"question_id": 3, "answer": "x"}]))  # fmt: skip
    args = [*_files(tmp_path), "--predictions", str(preds)]
    assert main([*args, "--ndigits", "1"]) == 0
    written = (tmp_path / "p_vqa_eval.json").read_text()
    accuracy = json.loads(written)
    assert accuracy["overall"] == 33.3 and written == json.dumps(accuracy, indent=2) + "\n"
    assert capsys.readouterr().out == report_text(accuracy) + f"wrote {tmp_path / 'p_vqa_eval.json'}\n"
    preds.write_text(json.dumps([{"question_id": 1, "answer": "red"}]))
    assert main(args) == 1
    assert capsys.readouterr().err.startswith(f"error: {preds}: 2 of 3 questions have no prediction (first: 2, 3);")
    (tmp_path / "ids.json").write_text("[1]")
    args = [*_files(tmp_path, questions=[1]), "--predictions", str(preds), "--question-ids", str(tmp_path / "ids.json")]
    assert main(args) == 0  # questions 2 and 3 are not scored: they need not be in the question file
    parsed = build_parser().parse_args(["--annotations", "a", "--questions", "q", "--predictions", "p",
                                        "--question-ids", "i.json", "--out", "o.json"])  # fmt: skip
    assert parsed.question_ids == Path("i.json") and parsed.out == Path("o.json")


def test_five_ids_are_shown_whole_and_the_default_source() -> None:
    anns = [ann(i, ["red"] * 10) for i in range(1, 7)]
    with pytest.raises(VQAEvalError) as err:
        evaluate(anns, {6: "red"}, question_ids=[1, 2, 3, 4, 5, 6])
    assert str(err.value) == "predictions: 5 of 6 questions have no prediction (first: 1, 2, 3, 4, 5)"
