"""Prediction and submission files: each task registers the writer of its format in its own file.

Every file is written atomically: a crash never leaves a truncated submission behind. A task's
format is a writer registered under the task's name with ``@register_writer(name, suffix)``;
``write_predictions(name, ...)`` writes ``<split>_predict<suffix>`` with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from lxrt.fileio import atomic_write_text
from tasks.registry import same_definition

Writer = Callable[[Mapping[Any, Any], Path, "Iterable[Any] | None"], Path]
"""``writer(predictions, path, expected_ids)``: check completeness, write ``path``, return it."""
_WRITERS: dict[str, tuple[str, Writer]] = {}


def register_writer(task: str, suffix: str) -> Callable[[Writer], Writer]:
    """Decorator: ``task``'s submission files are ``<split>_predict<suffix>`` written by the function."""

    def add(fn: Writer) -> Writer:
        known = _WRITERS.get(task)
        if known is not None and (known[0] != suffix or not same_definition(known[1], fn)):
            raise ValueError(f"a submission writer for {task!r} is already registered ({known[1].__module__})")
        _WRITERS[task] = (suffix, fn)
        return fn

    return add


def prediction_path(output_dir: str | Path, split: str, task: str) -> Path:
    """``<output>/<split>_predict<suffix>``, the suffix ``task``'s writer was registered with."""
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
