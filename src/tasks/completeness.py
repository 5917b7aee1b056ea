"""Server splits are written whole: a question whose image features are absent fails the run.

The evaluation servers score a missing question as wrong, and a submission that silently lacks some
is worse than none. The check runs when the split is loaded, before any evaluation
(``check_server_split``). ``--allow-missing`` writes the questions that have features, with a loud
summary and the list of the others in ``<output>/<split>_missing.txt``. Every other split (training,
minival, nominival, GQA testdev, ...) is local: its records without features are dropped with one
count in the log when it is loaded (``tasks.data_common.drop_missing``), as in the original, and its
prediction file holds the others. A task declares its server splits (``Task.server_splits``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.report import get_logger
from engine.task import Task
from lxrt.fileio import atomic_write

SHOWN_IDS = 10


class IncompleteSubmissionError(RuntimeError):
    """A server split with questions whose image features are missing."""


def is_server_split(task: Task | type[Task], split: str) -> bool:
    """Whether ``task`` sends ``split``'s predictions to an evaluation server (its ``server_splits``)."""
    return split in task.server_splits


def missing_records(dataset: Any) -> list[dict[str, Any]]:
    """The records of ``dataset``'s JSON files that were dropped for lack of image features."""
    return list(getattr(dataset, "dropped", []))


def _describe(dataset: Any, recs: list[dict[str, Any]]) -> str:
    key, images = dataset.id_key, dataset.image_keys
    shown = ", ".join(
        f"{rec[key]!r} (image {' + '.join(str(rec[k]) for k in images if rec[k] not in dataset.features)})"
        for rec in recs[:SHOWN_IDS]
    )
    more = f", ... ({len(recs) - SHOWN_IDS} more)" if len(recs) > SHOWN_IDS else ""
    return shown + more


def write_missing_list(dataset: Any, recs: list[dict[str, Any]], path: Path) -> Path:
    """``<id>\\t<image ids>`` per missing record."""
    lines = "".join(
        f"{rec[dataset.id_key]}\t{','.join(str(rec[k]) for k in dataset.image_keys)}\n" for rec in recs
    )
    return atomic_write(path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))


def check_server_split(
    task: Task | type[Task], dataset: Any, allow_missing: bool, output_dir: str | Path | None = None
) -> None:
    """Raise ``IncompleteSubmissionError`` when a server split of ``task`` lost records to missing
    features (how many, which ids, which feature files were read); with ``allow_missing``, log it."""
    for split in dataset.splits:
        if not is_server_split(task, split):
            continue
        split_of = getattr(dataset, "split_of", {})
        recs = [r for r in missing_records(dataset) if split_of.get(r[dataset.id_key], split) == split]
        if not recs:
            continue
        total = len(recs) + sum(1 for r in dataset.data if split_of.get(r[dataset.id_key], split) == split)
        files = ", ".join(str(p) for p in dataset.features.stores)
        listed = None
        if output_dir is not None:
            listed = write_missing_list(dataset, recs, Path(output_dir) / f"{split}_missing.txt")
        where = f"; all of them are listed in {listed}" if listed else ""
        what = (
            f"{task.name} {split}: {len(recs)} of {total} {dataset.id_key}s have no image features in {files}: "
            f"{_describe(dataset, recs)}{where}"
        )
        if not allow_missing:
            raise IncompleteSubmissionError(
                f"{what}. The evaluation server scores missing questions as wrong, so no submission is "
                "written. Use the complete feature file for this split, or pass --allow-missing to write "
                "the other predictions anyway."
            )
        log = get_logger()
        bar = "=" * 78
        log.warning(bar)
        log.warning(f"--allow-missing: the {split} submission will LACK {len(recs)} of {total} questions")
        log.warning(what)
        log.warning(bar)


def submission_ids(task: Task | type[Task], dataset: Any, allow_missing: bool) -> list[Any]:
    """The ids a prediction file of ``dataset`` must hold: the records that have features, and
    (without ``allow_missing``) the dropped records of ``task``'s server splits too. Local splits
    dropped theirs with a count in the log when they were loaded."""
    split_of = getattr(dataset, "split_of", {})
    recs = list(dataset.data)
    if not allow_missing:
        recs += [r for r in missing_records(dataset)
                 if is_server_split(task, split_of.get(r[dataset.id_key], dataset.name))]
    return [rec[dataset.id_key] for rec in recs]


def note_incomplete(task: Task | type[Task], dataset: Any, written: Path) -> None:
    """After ``--allow-missing`` wrote a server split: say once more, last, what the file lacks."""
    split_of = getattr(dataset, "split_of", {})
    recs = [r for r in missing_records(dataset)
            if is_server_split(task, split_of.get(r[dataset.id_key], dataset.name))]
    if recs:
        get_logger().warning(
            f"{written} LACKS {len(recs)} of {len(recs) + len(dataset.data)} questions (no image features, "
            "--allow-missing); they are listed in <split>_missing.txt beside it"
        )
