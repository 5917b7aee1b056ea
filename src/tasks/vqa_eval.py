"""The official VQA accuracy of a prediction file: ``python -m tasks.vqa_eval --help``.

Reads the official annotation and question files (``v2_mscoco_val2014_annotations.json``,
``v2_OpenEnded_mscoco_val2014_questions.json``) and a result file in the evaluation server's format
(``[{"question_id": int, "answer": str}, ...]``, e.g. ``snap/vqa/NAME/minival_predict.json``), and
gives what the VQA evaluation tool (GT-Vision-Lab/VQA, ``vqaEval.py``) gives: overall, per answer type
and per question type accuracy in percent, rounded to 2 decimals as its Python 2 ``round`` does.

Like the tool, every question of the annotation file is scored and must have a prediction;
``--question-ids FILE`` (e.g. ``data/vqa/minival.json``) or ``--only-predicted`` score a subset, as the
tool's ``evaluate(quesIds=...)`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.answers import DataFormatError, load_json
from tasks.metrics import py2_round, vqa_official_accuracy


class VQAEvalError(ValueError):
    """Inputs the evaluation cannot score; the message names the file and the question."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_annotations(path: Path) -> list[dict[str, Any]]:
    """The ``annotations`` list of an official annotation file, checked record by record."""
    data = load_json(path)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DataFormatError(f"{path}: expected an object with an 'annotations' list (official VQA annotations)")
    seen: set[int] = set()
    for i, ann in enumerate(anns):
        where = f"{path}: annotation {i}"
        if not isinstance(ann, dict):
            raise DataFormatError(f"{where} is {type(ann).__name__}, expected an object")
        qid = ann.get("question_id")
        if not _is_int(qid):
            raise DataFormatError(f"{where} has question_id {qid!r}, expected an integer")
        if qid in seen:
            raise DataFormatError(f"{where}: question_id {qid} appears twice")
        seen.add(qid)
        for key in ("question_type", "answer_type"):
            if not isinstance(ann.get(key), str):
                raise DataFormatError(f"{where} (question_id {qid}) has {key} {ann.get(key)!r}, expected a string")
        answers = ann.get("answers")
        if not isinstance(answers, list) or not answers:
            raise DataFormatError(f"{where} (question_id {qid}) has no 'answers' list")
        for j, a in enumerate(answers):
            if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
                raise DataFormatError(f"{where} (question_id {qid}): answer {j} is not an object with an answer string")
    return anns


def load_questions(path: Path) -> tuple[set[int], dict[int, Any], str]:
    """Question ids, multiple choices (v1 Multiple Choice files) and ``task_type`` of a question file."""
    data = load_json(path)
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise DataFormatError(f"{path}: expected an object with a 'questions' list (official VQA questions)")
    ids: set[int] = set()
    choices: dict[int, Any] = {}
    for i, q in enumerate(questions):
        qid = q.get("question_id") if isinstance(q, dict) else None
        if not _is_int(qid):
            raise DataFormatError(f"{path}: question {i} has no integer question_id")
        ids.add(qid)
        if "multiple_choices" in q:
            choices[qid] = q["multiple_choices"]
    return ids, choices, str(data.get("task_type", ""))


def load_predictions(path: Path) -> tuple[dict[int, str], list[int]]:
    """``{question_id: answer}`` of a result file, and its question ids in file order."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: results is not an array of objects (expected [{{question_id, answer}}])")
    preds: dict[int, str] = {}
    order: list[int] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}: result {i} is {type(rec).__name__}, expected an object")
        qid, ans = rec.get("question_id"), rec.get("answer")
        if not _is_int(qid):
            raise DataFormatError(f"{path}: result {i} has question_id {qid!r}, expected an integer")
        if not isinstance(ans, str):
            raise DataFormatError(f"{path}: result {i} (question_id {qid}) has answer {ans!r}, expected a string")
        if qid in preds:
            raise DataFormatError(f"{path}: question_id {qid} is predicted twice (results {order.index(qid)}, {i})")
        preds[qid] = ans
        order.append(qid)
    return preds, order


def load_question_ids(path: Path) -> list[int]:
    """Question ids of a subset file: a JSON list of ids, or a list of records with ``question_id``
    (this project's ``data/vqa/<split>.json``)."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of question ids or of records with question_id")
    ids = [rec.get("question_id") if isinstance(rec, dict) else rec for rec in data]
    bad = next((i for i, q in enumerate(ids) if not _is_int(q)), None)
    if bad is not None:
        raise DataFormatError(f"{path}: entry {bad} has no integer question id")
    return ids


def _first(ids: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(q) for q in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def evaluate(
    annotations: Sequence[Mapping[str, Any]],
    predictions: Mapping[int, str],
    question_ids: Sequence[int] | None = None,
    ndigits: int = 2,
    source: str = "predictions",
) -> dict[str, Any]:
    """The tool's ``accuracy``: ``overall``, ``perQuestionType``, ``perAnswerType`` (percent, rounded).

    ``question_ids`` (default: every annotation, in file order) are scored in the given order, as
    ``VQAEval.evaluate(quesIds)``. Predictions for ids without an annotation, and scored ids without a
    prediction, are errors naming ``source``.
    """
    by_id = {ann["question_id"]: ann for ann in annotations}
    unknown = [q for q in predictions if q not in by_id]
    if unknown:
        raise VQAEvalError(
            f"{source}: {len(unknown)} predicted question ids are not in the annotations (first: {_first(unknown)})"
        )
    ids = list(by_id) if question_ids is None else list(question_ids)
    not_annotated = [q for q in ids if q not in by_id]
    if not_annotated:
        raise VQAEvalError(
            f"{len(not_annotated)} question ids to score have no annotation (first: {_first(not_annotated)})"
        )
    missing = [q for q in ids if q not in predictions]
    if missing:
        hint = (
            "; the official tool scores every question of the annotation file: to score a subset such as "
            "minival pass --question-ids data/vqa/minival.json (or --only-predicted)"
            if question_ids is None else ""
        )
        raise VQAEvalError(
            f"{source}: {len(missing)} of {len(ids)} questions have no prediction (first: {_first(missing)}){hint}"
        )
    if not ids:
        raise VQAEvalError("no questions to score")
    acc_qa: list[float] = []
    acc_qtype: dict[str, list[float]] = {}
    acc_atype: dict[str, list[float]] = {}
    for qid in ids:
        ann = by_id[qid]
        acc = vqa_official_accuracy(predictions[qid], ann["answers"])
        acc_qa.append(acc)
        acc_qtype.setdefault(ann["question_type"], []).append(acc)
        acc_atype.setdefault(ann["answer_type"], []).append(acc)

    def percent(values: list[float]) -> float:
        return py2_round(100 * float(sum(values)) / len(values), ndigits)

    return {
        "overall": percent(acc_qa),
        "perQuestionType": {k: percent(v) for k, v in sorted(acc_qtype.items())},
        "perAnswerType": {k: percent(v) for k, v in sorted(acc_atype.items())},
    }


def report_text(accuracy: Mapping[str, Any]) -> str:
    """The accuracies as the tool's demo prints them (types sorted)."""
    lines = [f"Overall Accuracy is: {accuracy['overall']:.02f}", "", "Per Question Type Accuracy is the following:"]
    lines += [f"{k} : {v:.02f}" for k, v in accuracy["perQuestionType"].items()]
    lines += ["", "Per Answer Type Accuracy is the following:"]
    lines += [f"{k} : {v:.02f}" for k, v in accuracy["perAnswerType"].items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.vqa_eval",
        description="Official VQA accuracy (overall, per answer type, per question type) of a result file, "
        "as the VQA evaluation tool computes it.",
    )
    p.add_argument("--annotations", type=Path, required=True, help="official annotations, e.g. "
                   "v2_mscoco_val2014_annotations.json")
    p.add_argument("--questions", type=Path, required=True, help="official questions, e.g. "
                   "v2_OpenEnded_mscoco_val2014_questions.json")
    p.add_argument("--predictions", type=Path, required=True, help="result file [{question_id, answer}], "
                   "e.g. snap/vqa/NAME/minival_predict.json")
    subset = p.add_mutually_exclusive_group()
    subset.add_argument("--question-ids", type=Path, help="score only these questions: a JSON list of ids or "
                        "of records with question_id (e.g. data/vqa/minival.json)")
    subset.add_argument("--only-predicted", action="store_true", help="score only the predicted questions")
    p.add_argument("--out", type=Path, help="JSON file for the accuracies (default: beside the predictions, "
                   "<name>_vqa_eval.json)")
    p.add_argument("--ndigits", type=int, default=2, help="decimals of the rounded accuracies (the tool's n)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        annotations = load_annotations(args.annotations)
        question_set, choices, task_type = load_questions(args.questions)
        predictions, order = load_predictions(args.predictions)
        ids = (
            load_question_ids(args.question_ids) if args.question_ids
            else order if args.only_predicted
            else None
        )
        scored = [a["question_id"] for a in annotations] if ids is None else ids
        absent = [q for q in scored if q not in question_set]
        if absent:
            raise VQAEvalError(
                f"{args.questions}: {len(absent)} scored questions are not in the question file "
                f"(first: {_first(absent)}); are annotations and questions of the same split?"
            )
        if task_type == "Multiple Choice":
            wrong = [q for q in predictions if q in choices and predictions[q] not in choices[q]]
            if wrong:
                raise VQAEvalError(
                    f"{args.predictions}: predicted answer is not one of the multiple choices for question "
                    f"{wrong[0]} ({len(wrong)} such questions)"
                )
        accuracy = evaluate(annotations, predictions, ids, args.ndigits, source=str(args.predictions))
    except (VQAEvalError, DataFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from lxrt.fileio import atomic_write  # imported here so that --help stays fast

    out = args.out or args.predictions.with_name(f"{args.predictions.stem}_vqa_eval.json")
    text = json.dumps(accuracy, indent=2)
    atomic_write(out, lambda tmp: tmp.write_text(text + "\n"))
    print(report_text(accuracy), end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
