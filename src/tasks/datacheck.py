"""Before a run starts: are the data files it needs there? One message saying what is missing and
the ``bash run/download_data.bash`` command that fetches it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datatools import sources as manifest
from features.store import store_path_for
from tasks.splits import run_splits


class MissingDataError(FileNotFoundError):
    """Data files a run needs are absent; the message lists them and how to fetch them."""

    def __str__(self) -> str:
        return str(self.args[0])


def feature_files(task: str, split: str, root: Path) -> list[Path]:
    """The feature TSVs ``split`` of ``task`` reads (as the datasets do)."""
    if task == "vqa":
        from tasks.vqa_data import vqa_feature_files

        return list(vqa_feature_files([split], root, None))
    if task == "gqa":
        from tasks.gqa_data import gqa_feature_files

        return list(gqa_feature_files([split], root, None))
    if task == "nlvr2":
        from tasks.nlvr2_data import nlvr2_feature_files

        return list(nlvr2_feature_files([split], root, None))
    if task == "lxmert_pretrain":
        from pretrain.data import SPLIT_FEATURES

        return [root / SPLIT_FEATURES[split]] if split in SPLIT_FEATURES else []
    return []


def split_file(task: str, split: str, root: Path) -> Path:
    folder = "lxmert" if task == "lxmert_pretrain" else task
    return root / folder / f"{split}.json"


def _features_present(tsv: Path) -> bool:
    if tsv.is_file() or store_path_for(tsv).is_dir():
        return True
    return any(tsv.parent.glob(f"{tsv.stem}.top*.store")) if tsv.parent.is_dir() else False


def missing_files(task: str, splits: Iterable[str], root: str | Path) -> list[Path]:
    """Question files and feature TSVs (or their stores) of ``splits`` that are absent, in order."""
    root = Path(root)
    missing: list[Path] = []
    for split in splits:
        for path in (split_file(task, split, root), *feature_files(task, split, root)):
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
        if rel.startswith("data/nlvr2/") and rel.endswith(".json") and "nlvr2" not in groups:
            groups.append("nlvr2")
    return groups


def require_data(task: str, train: str, valid: str, test: str, root: str | Path,
                 pretrained: Iterable[str] = ()) -> None:
    """Raise ``MissingDataError`` naming every missing file of the run's splits (and pretrained
    weights), the exact download command and ``--data-root``."""
    root = Path(root)
    splits = run_splits(task, train, valid, test)
    missing = missing_files(task, splits, root)
    groups = download_groups(missing, root)
    for ckpt in pretrained:
        if ckpt and not any(Path(ckpt + s).is_file() for s in ("", ".pth", "_LXRT.pth")):
            missing.append(Path(ckpt + "_LXRT.pth"))
            groups.append("pretrained-model")
    if not missing:
        return
    shown = "\n".join(f"  {p}" for p in missing)
    data_root = f" --data-root {root}" if root != Path("data") else ""
    lines = [f"{task}: the data this run needs is not there ({len(missing)} missing):", shown]
    if groups:
        lines.append(f"Fetch it with:\n  bash run/download_data.bash {' '.join(groups)}{data_root}")
    if any(p.parent.name == "nlvr2" and p.suffix == ".json" for p in missing):
        lines.append(f"then build the NLVR2 files: python -m tasks.nlvr2_prepare --raw {root}/nlvr2/nlvr/nlvr2/data "
                     f"--out {root}/nlvr2")
    lines.append(f"If the data is elsewhere, pass --data-root DIR (now: {root}), the folder holding "
                 f"{task if task != 'lxmert_pretrain' else 'lxmert'}/ and the *_imgfeat/ folders. "
                 "To try the code without the real data: python -m datatools.synthetic --out DIR, "
                 "then --data-root DIR.")
    raise MissingDataError("\n".join(lines))
