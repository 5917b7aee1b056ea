"""Before a run starts: are the data files it needs there? One message saying what is missing and
the ``bash run/download_data.bash`` command that fetches it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datatools import sources as manifest
from engine.task import Task
from features.store import store_path_for
from tasks.splits import as_task, run_splits


class MissingDataError(FileNotFoundError):
    """Data files a run needs are absent; the message lists them and how to fetch them."""

    def __str__(self) -> str:
        return str(self.args[0])


def split_file(task: type[Task], split: str, root: Path) -> Path:
    return root / task.folder() / f"{split}.json"


def _features_present(tsv: Path) -> bool:
    if tsv.is_file() or store_path_for(tsv).is_dir():
        return True
    return any(tsv.parent.glob(f"{tsv.stem}.top*.store")) if tsv.parent.is_dir() else False


def missing_files(task: type[Task], splits: Iterable[str], root: str | Path) -> list[Path]:
    """Question files and feature TSVs (or their stores) of ``splits`` that are absent, in order (the
    task names its feature files, ``Task.feature_files``)."""
    root = Path(root)
    missing: list[Path] = []
    for split in splits:
        for path in (split_file(task, split, root), *task.feature_files([split], root, None)):
            present = _features_present(path) if path.suffix == ".tsv" else path.is_file()
            if not present and path not in missing:
                missing.append(path)
    return missing


def download_groups(paths: Iterable[Path], root: Path) -> list[str]:
    """The ``download_data.bash`` groups that provide ``paths`` (relative to data root ``root``)."""
    groups: list[str] = []
    for path in paths:
        try:
            rel = "data/" + path.relative_to(root).as_posix()
        except ValueError:
            continue
        for src in manifest.SOURCES:
            if rel in (src.dest, *src.outputs) and src.group not in groups:
                groups.append(src.group)
    return groups


def require_data(task: type[Task] | str, train: str, valid: str, test: str, root: str | Path,
                 pretrained: Iterable[str] = ()) -> None:
    """Raise ``MissingDataError`` naming every missing file of the run's splits (and pretrained
    weights), the exact download command and ``--data-root``."""
    task = as_task(task)
    root = Path(root)
    splits = run_splits(task, train, valid, test)
    missing = missing_files(task, splits, root)
    groups = download_groups(missing, root)
    more_groups, hints = task.missing_data_hints(missing, root)
    groups += [g for g in more_groups if g not in groups]
    no_weights = False
    for ckpt in pretrained:
        if ckpt and not any(Path(ckpt + s).is_file() for s in ("", ".pth", "_LXRT.pth")):
            missing.append(Path(ckpt + "_LXRT.pth"))
            if "pretrained-model" not in groups:
                groups.append("pretrained-model")
            no_weights = True
    if not missing:
        return
    shown = "\n".join(f"  {p}" for p in missing)
    data_root = f" --data-root {root}" if root != Path("data") else ""
    lines = [f"{task.name}: the data this run needs is not there ({len(missing)} missing):", shown]
    if groups:
        lines.append(f"Fetch it with:\n  bash run/download_data.bash {' '.join(groups)}{data_root}")
    if no_weights:
        lines.append("Or start without the pretrained LXMERT weights: add --from-bert (the language layers from "
                     "BERT-base, the rest random; --from-bert --fromScratch: all random); expect a lower score.")
    lines += hints
    lines.append(f"If the data is elsewhere, pass --data-root DIR (now: {root}), the folder holding "
                 f"{task.folder()}/ and the *_imgfeat/ folders. "
                 "To try the code without the real data: python -m tasks.synthetic --out DIR, "
                 "then --data-root DIR.")
    raise MissingDataError("\n".join(lines))
