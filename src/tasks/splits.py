"""The split names of a run, checked against what its task accepts before anything is loaded.

Each task declares its names (``known_splits``) and how it reads a ``--test`` name
(``predict_splits``, the original's rules for VQA, GQA and NLVR2); this module only applies them.
"""

from __future__ import annotations

from engine.task import PredictSplit, SplitNameError, Task
from tasks.registry import task_class

__all__ = ["PredictSplit", "SplitNameError", "as_task", "resolve_test_splits", "run_splits", "split_list"]


def split_list(value: str) -> list[str]:
    """``"train,nominival"`` -> ``["train", "nominival"]`` (empty -> [])."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else []


def as_task(task: type[Task] | str) -> type[Task]:
    """A task class, or the registered task of that name."""
    return task_class(task) if isinstance(task, str) else task


def resolve_test_splits(task: type[Task] | str, name: str) -> list[PredictSplit]:
    """What ``--test name`` loads and writes for ``task``, in the original's order."""
    return as_task(task).predict_splits(name)


def run_splits(task: type[Task] | str, train: str, valid: str, test: str) -> list[str]:
    """The splits a run reads, checked before it loads or trains anything: with ``--test`` only what
    the test names resolve to (the run predicts and never trains), otherwise ``--train`` and ``--valid``."""
    task = as_task(task)
    if test:
        return [p.load for name in split_list(test) for p in task.predict_splits(name)]
    for flag, value in (("--train", train), ("--valid", valid)):
        task.check_split_names(split_list(value), flag)
    return [*split_list(train), *split_list(valid)]
