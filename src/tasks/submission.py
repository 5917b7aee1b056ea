"""Prediction and submission files in the formats of the original (and of the evaluation servers).

VQA (EvalAI):  ``[{"answer": str, "question_id": int}, ...]``, indent 4, sorted keys
GQA:           ``[{"prediction": str, "questionId": str}, ...]``, indent 4, sorted keys
NLVR2:         CSV lines ``identifier,True`` / ``identifier,False``, no header

Every file is written atomically: a crash never leaves a truncated submission behind. A task's
format is a writer registered under the task's name with ``@register_writer(name, suffix)``;
``write_predictions(name, ...)`` writes ``<split>_predict<suffix>`` with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from lxrt import fileio

Writer = Callable[[Mapping[Any, Any], Path, "Iterable[Any] | None"], Path]
"""``writer(predictions, path, expected_ids)``: check completeness, write ``path``, return it."""
_WRITERS: dict[str, tuple[str, Writer]] = {}


def register_writer(task: str, suffix: str) -> Callable[[Writer], Writer]:
    """Decorator: ``task``'s submission files are ``<split>_predict<suffix>`` written by the function."""

    def add(fn: Writer) -> Writer:
        if _WRITERS.get(task, (suffix, fn)) != (suffix, fn):
            raise ValueError(f"a submission writer for {task!r} is already registered")
        _WRITERS[task] = (suffix, fn)
        return fn

    return add


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically (temporary file beside ``path``, fsync, rename; a full disk is
    one ``DiskFullError`` line with the size needed)."""
    return fileio.atomic_write_text(path, text)


def prediction_path(output_dir: str | Path, split: str, task: str) -> Path:
    """``<output>/<split>_predict.json`` (VQA, GQA) or ``<split>_predict.csv`` (NLVR2): the suffix
    ``task``'s writer was registered with."""
    if task not in _WRITERS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_WRITERS)}")
    return Path(output_dir) / f"{split}_predict{_WRITERS[task][0]}"


def check_complete(predictions: Mapping[Any, Any], expected: Iterable[Any] | None, what: str) -> None:
    """Raise if some expected id has no prediction: the servers score missing questions as wrong
    (a GQA submission missing questions whose features were absent scored 0)."""
    if expected is None:
        return
    expected = expected if isinstance(expected, Collection) else list(expected)
    missing = [i for i in expected if i not in predictions]
    if missing:
        raise ValueError(
            f"{what}: {len(missing)} of {len(expected)} questions have no prediction (first: {missing[0]!r}); "
            "are their image features missing?"
        )


def write_json_rows(
    predictions: Mapping[Any, Any],
    path: str | Path,
    expected: Iterable[Any] | None,
    id_key: str,
    value_key: str,
) -> Path:
    """A JSON list of ``{id_key: id, value_key: prediction}`` (indent 4, sorted keys), complete or not
    written at all."""
    check_complete(predictions, expected, str(path))
    rows = [{id_key: i, value_key: p} for i, p in predictions.items()]
    return atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True))


@register_writer("vqa", ".json")
def write_vqa_submission(
    predictions: Mapping[int, str], path: str | Path, expected: Iterable[int] | None = None
) -> Path:
    """VQA result file: a list of ``{"answer", "question_id"}`` with integer question ids."""
    check_complete(predictions, expected, str(path))
    rows = []
    for qid, ans in predictions.items():
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise TypeError(f"VQA question_id must be an int, got {qid!r}")
        rows.append({"question_id": qid, "answer": str(ans)})
    return atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True))


@register_writer("gqa", ".json")
def write_gqa_submission(
    predictions: Mapping[str, str], path: str | Path, expected: Iterable[str] | None = None
) -> Path:
    """GQA result file: a list of ``{"prediction", "questionId"}`` with string question ids."""
    check_complete(predictions, expected, str(path))
    rows = []
    for qid, ans in predictions.items():
        if not isinstance(qid, str):
            raise TypeError(f"GQA questionId must be a string (the server compares strings), got {qid!r}")
        rows.append({"questionId": qid, "prediction": str(ans)})
    return atomic_write_text(path, json.dumps(rows, indent=4, sort_keys=True))


@register_writer("nlvr2", ".csv")
def write_nlvr2_predictions(
    predictions: Mapping[str, Any], path: str | Path, expected: Iterable[str] | None = None
) -> Path:
    """NLVR2 CSV: ``identifier,True`` for a prediction of 1 (or True), ``identifier,False`` for 0."""
    check_complete(predictions, expected, str(path))
    lines = []
    for ident, pred in predictions.items():
        if pred not in (0, 1):
            raise ValueError(f"NLVR2 prediction for {ident!r} must be 0/1 or a bool, got {pred!r}")
        if "," in ident or "\n" in ident:
            raise ValueError(f"NLVR2 identifier {ident!r} cannot be written to a CSV line")
        lines.append(f"{ident},{'True' if pred == 1 else 'False'}\n")
    return atomic_write_text(path, "".join(lines))


def write_predictions(
    task: str,
    predictions: Mapping[Any, Any],
    output_dir: str | Path,
    split: str,
    expected: Iterable[Any] | None = None,
) -> Path:
    """``<split>_predict.{json,csv}`` in ``output_dir`` in the task's submission format."""
    path = prediction_path(output_dir, split, task)
    return _WRITERS[task][1](predictions, path, expected)


def dump_predictions(predictions: Mapping[Any, Any], path: str | Path) -> Path:
    """Any task's predictions as a JSON object ``{str(id): prediction}`` (for inspection/ensembling)."""
    return atomic_write_text(path, json.dumps({str(k): v for k, v in predictions.items()}, indent=1, sort_keys=True))
