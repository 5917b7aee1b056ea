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

from collections.abc import Iterable
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


KNOWN_SPLITS: dict[str, tuple[str, ...]] = {
    "vqa": ("train", "nominival", "minival", "valid", "test"),
    "gqa": ("train", "valid", "testdev", "testdev_all", "submit"),
    "nlvr2": ("train", "valid", "test", "hidden"),
    "lxmert_pretrain": ("mscoco_train", "mscoco_nominival", "mscoco_minival", "vgnococo"),
}
"""The ``--train``/``--valid`` names each task reads from ``data/<task>/``."""


def split_list(value: str) -> list[str]:
    """``"train,nominival"`` -> ``["train", "nominival"]`` (empty -> [])."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else []


def check_split_names(task: str, names: Iterable[str], flag: str = "") -> None:
    """Raise ``SplitNameError`` listing the accepted names when one of ``names`` is not one of them."""
    known = KNOWN_SPLITS.get(task)
    if known is None:
        return
    bad = [n for n in names if n not in known]
    if bad:
        where = f"{flag} " if flag else ""
        raise SplitNameError(f"{where}{','.join(bad)}: unknown {task} split name(s); accepted: {', '.join(known)}")


def run_splits(task: str, train: str, valid: str, test: str) -> list[str]:
    """The splits a run reads, checked before it loads or trains anything: with ``--test`` only what
    the test names resolve to (the run predicts and never trains), otherwise ``--train`` and ``--valid``."""
    if test:
        return [p.load for name in split_list(test) for p in resolve_test_splits(task, name)]
    for flag, value in (("--train", train), ("--valid", valid)):
        check_split_names(task, split_list(value), flag)
    return [*split_list(train), *split_list(valid)]
