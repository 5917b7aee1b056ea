"""``--test NAME`` as the original task scripts read it: which split to load, which file to write.

VQA: a name containing ``test`` predicts that split into ``test_predict.json``; otherwise a name
containing ``val`` evaluates ``minival`` into ``minival_predict.json``.
GQA: a name containing ``submit`` predicts that split into ``submit_predict.json``; a name containing
``testdev`` evaluates ``testdev`` into ``testdev_predict.json`` (both when both match).
NLVR2: a name containing ``hidden`` predicts it into ``hidden_predict.csv``; a name containing ``test``
or ``valid`` evaluates it into ``<name>_predict.csv``.
Any other name is an error listing what is accepted (the original fails an assert or does nothing).
Tasks the original does not have keep the name as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictSplit:
    """``load``: the split(s) read from ``data/<task>/``; ``output``: the ``<output>_predict`` file stem."""

    load: str
    output: str


ACCEPTED = {
    "vqa": "a name containing 'test' (e.g. test -> test_predict.json) or 'val' (minival -> minival_predict.json)",
    "gqa": "a name containing 'submit' (submit -> submit_predict.json) or 'testdev' (testdev -> testdev_predict.json)",
    "nlvr2": "a name containing 'hidden' (-> hidden_predict.csv), 'test' or 'valid' (NAME -> NAME_predict.csv)",
}


class SplitNameError(ValueError):
    """A ``--test`` name the original task script does not accept."""


def resolve_test_splits(task: str, name: str) -> list[PredictSplit]:
    """What ``--test name`` loads and writes for ``task`` (vqa, gqa, nlvr2), in the original's order.
    Other tasks (e.g. the easy-VQA demo) predict the split they name into ``<name>_predict``."""
    name = name.strip()
    if task not in ACCEPTED:
        return [PredictSplit(name, name)]
    found: list[PredictSplit] = []
    if task == "vqa":
        if "test" in name:
            found.append(PredictSplit(name, "test"))
        elif "val" in name:
            found.append(PredictSplit("minival", "minival"))
    elif task == "gqa":
        if "submit" in name:
            found.append(PredictSplit(name, "submit"))
        if "testdev" in name:
            found.append(PredictSplit("testdev", "testdev"))
    else:
        if "hidden" in name:
            found.append(PredictSplit(name, "hidden"))
        elif "test" in name or "valid" in name:
            found.append(PredictSplit(name, name))
    if not found:
        raise SplitNameError(f"--test {name!r} is not a {task.upper()} test split; accepted: {ACCEPTED[task]}")
    return found
