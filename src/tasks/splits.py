"""The split names each task accepts, checked before any work starts."""

from __future__ import annotations

from collections.abc import Iterable

KNOWN_SPLITS: dict[str, tuple[str, ...]] = {
    "vqa": ("train", "nominival", "minival", "valid", "test"),
    "gqa": ("train", "valid", "testdev", "testdev_all", "submit"),
    "nlvr2": ("train", "valid", "test", "hidden"),
    "lxmert_pretrain": ("mscoco_train", "mscoco_nominival", "mscoco_minival", "vgnococo"),
}


class SplitNameError(ValueError):
    """A split name the task does not know."""


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
        raise SplitNameError(
            f"{where}{','.join(bad)}: unknown {task} split name(s); accepted: {', '.join(known)}"
        )


def check_run_splits(task: str, train: str, valid: str, test: str) -> None:
    """Every split of ``--train``, ``--valid`` and ``--test``, before the run loads or trains anything."""
    for flag, value in (("--train", train), ("--valid", valid), ("--test", test)):
        check_split_names(task, split_list(value), flag)
