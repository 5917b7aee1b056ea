"""Released fine-tuned models from the HF hub -> task snapshots that every tool here loads.

``bash run/download_data.bash vqa-model`` fetches ``unc-nlp/lxmert-vqa-uncased`` (transformers'
``LxmertForQuestionAnswering``: ``pytorch_model.bin`` and ``config.json``) into
``snap/hf/lxmert-vqa-uncased/``, then runs ``python -m datatools.hf_import vqa-model``, which writes

    snap/vqa/lxmert-vqa-uncased/BEST.pth                  the weights in the original key layout
    snap/vqa/lxmert-vqa-uncased/BEST.json                 its facts (task, sizes, answer table identity)
    snap/vqa/lxmert-vqa-uncased/trainval_label2ans.json   the answers, in the order of the head's rows

The answer order is the one the weights were trained with: the ``id2label`` of ``config.json``
when it names the answers, else the original's table (``data/vqa/trainval_label2ans.json``, 3129
answers; GQA: 1842), which is what the released configs leave implicit (they carry no names).
An import that is already there for the same downloaded file is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datatools import sources as manifest

if TYPE_CHECKING:  # torch and the model code load only when there is something to import
    import torch

    from lxrt.snapshot import SnapshotFacts

log = logging.getLogger(__name__)

ANSWERS_FILE = "trainval_label2ans.json"
WEIGHTS_FILES = ("pytorch_model.bin", "model.safetensors")
ENCODER = "lxrt_encoder.model.bert."


class ReleaseImportError(ValueError):
    """A downloaded model that cannot be imported; the message names the file and what was expected."""


@dataclass(frozen=True)
class Release:
    """A released HF QA model: the download group with its files, the task it answers, where its
    snapshot goes and the original answer table its head follows."""

    group: str
    repo: str
    task: str
    answers: str  # data/<task>/trainval_label2ans.json (shipped with this code)
    max_seq_length: int = 20  # the original's MAX_VQA_LENGTH / MAX_GQA_LENGTH

    @property
    def name(self) -> str:
        return self.repo.split("/")[-1]

    @property
    def source(self) -> str:
        """``snap/hf/<model>``: where the download group puts the HF files."""
        return f"snap/hf/{self.name}"

    @property
    def snapshot(self) -> str:
        return f"snap/{self.task}/{self.name}/BEST.pth"

    def revision(self) -> str:
        entry = next(s for s in manifest.SOURCES if s.group == self.group)
        return entry.path.split("/resolve/")[1].split("/")[0]


RELEASES: tuple[Release, ...] = tuple(Release(**spec) for spec in manifest.RELEASES)
"""The released models of the manifest (``datatools/manifest.json``)."""


def release_for(group: str) -> Release | None:
    return next((r for r in RELEASES if r.group == group), None)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseImportError(f"{path}: not found ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReleaseImportError(f"{path}: not valid JSON ({what}): {err}") from None


def read_answers(path: Path) -> list[str]:
    """A ``label2ans`` list of answer strings."""
    answers = read_json(path, "an answer table: a JSON list of answers")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ReleaseImportError(f"{path}: expected a JSON list of answer strings")
    return answers


def head_rows(state: dict[str, torch.Tensor], source: str) -> int:
    last = state.get("logit_fc.3.weight")
    if last is None:
        raise ReleaseImportError(f"{source}: no answer head (answer_head.logit_fc.3.weight)")
    return int(last.shape[0])


def check_keys(state: dict[str, torch.Tensor], facts: SnapshotFacts, source: str) -> None:
    """The converted tensors fit a task model of ``facts``' sizes, key for key and shape for shape
    (checked against a model built without memory)."""
    import torch

    from lxrt import TaskEncoder, answer_mlp

    h = facts.model.hidden_size
    with torch.device("meta"):
        encoder = TaskEncoder(facts.model)
        head = answer_mlp(h, 2 * h, facts.num_outputs, facts.model.layer_norm_eps)
    expected = {"lxrt_encoder." + k: v.shape for k, v in encoder.state_dict().items()}
    expected.update({"logit_fc." + k: v.shape for k, v in head.state_dict().items()})
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: {tuple(state[k].shape)}, expected {tuple(expected[k])}"
              for k in expected if k in state and state[k].shape != expected[k]]  # fmt: skip
    kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
    problems = [f"{len(v)} {t} (first: {v[0]})" for t, v in kinds if v]
    if problems:
        raise ReleaseImportError(f"{source}: not the LxmertForQuestionAnswering its config.json describes: "
                           + "; ".join(problems))  # fmt: skip


def import_model(
    folder: str | Path,
    out: str | Path,
    task: str,
    original_answers: Sequence[str],
    answers_name: str,
    source: str = "",
    max_seq_length: int = 20,
) -> Path:
    """Convert the HF ``LxmertForQuestionAnswering`` in ``folder`` (``config.json`` and
    ``pytorch_model.bin`` or ``model.safetensors``) into the task snapshot ``out`` (``BEST.pth``),
    with its facts file and answer table beside it; returns ``out``.

    ``original_answers`` is the answer table the head follows when ``config.json`` names none.
    """
    from lxrt import CheckpointError, config_from_hf, from_hf_state_dict, read_state_dict, save_state_dict
    from lxrt.fileio import atomic_write_text
    from lxrt.hf import hf_answer_labels, hf_layout
    from lxrt.snapshot import AnswerTableId, SnapshotFacts, write_facts

    folder, out = Path(folder), Path(out)
    weights = next((folder / f for f in WEIGHTS_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise ReleaseImportError(f"{folder}: no {' or '.join(WEIGHTS_FILES)} to import")
    hf = read_json(folder / "config.json", "the model's HF config")
    if not isinstance(hf, dict):
        raise ReleaseImportError(f"{folder / 'config.json'}: expected a JSON object (an LxmertConfig)")
    stat = weights.stat()
    origin = {"source": source or str(folder), "source_file": weights.name, "source_size": stat.st_size,
              "source_mtime_ns": stat.st_mtime_ns}  # fmt: skip
    if _already_imported(out, origin):
        log.info("%s: already imported from %s", out, weights)
        return out

    try:
        model = config_from_hf(hf)
    except (TypeError, ValueError) as err:
        raise ReleaseImportError(f"{folder / 'config.json'}: not an LxmertConfig ({err})") from None
    log.info("%s: reading %s", out.parent.name, weights)
    try:
        hf_state = read_state_dict(weights)
    except CheckpointError as err:
        raise ReleaseImportError(str(err)) from None
    if hf_layout(hf_state) != "task":
        raise ReleaseImportError(f"{weights}: not an LxmertForQuestionAnswering state dict (no answer_head.logit_fc.* "
                           "or pretraining heads present)")  # fmt: skip
    try:
        state = from_hf_state_dict(hf_state, layout="task")
    except CheckpointError as err:
        raise ReleaseImportError(f"{weights}: {err}") from None
    rows = head_rows(state, str(weights))

    named = hf_answer_labels(hf)
    answers = named if named is not None else list(original_answers)
    where = f"{folder / 'config.json'} id2label" if named is not None else answers_name
    if named is not None and named != list(original_answers):
        log.warning("%s: the answers of config.json's id2label differ from %s; the import follows id2label",
                    weights, answers_name)  # fmt: skip
    if len(answers) != rows:
        raise ReleaseImportError(f"{weights}: the answer head has {rows} rows but the answer table ({where}) has "
                           f"{len(answers)} answers")  # fmt: skip
    facts = SnapshotFacts(task=task, model=model.replace(num_qa_labels=rows), num_outputs=rows,
                          answers=AnswerTableId.of(answers, answers_name if named is None else "id2label"),
                          recipe="", images_per_example=1, max_seq_length=max_seq_length, extra=origin)  # fmt: skip
    check_keys(state, facts, str(weights))

    save_state_dict(state, out)
    atomic_write_text(out.parent / ANSWERS_FILE, json.dumps(answers) + "\n")
    write_facts(out, facts)  # last: its presence says the import is complete
    log.info("%s: imported (%s, %d answers) from %s", out, task, rows, weights)
    return out


def _already_imported(out: Path, origin: dict[str, Any]) -> bool:
    from lxrt.snapshot import SnapshotFactsError, read_facts

    try:
        facts = read_facts(out)
    except SnapshotFactsError:
        return False
    if facts is None or not out.is_file() or not (out.parent / ANSWERS_FILE).is_file():
        return False
    return all(facts.extra.get(k) == v for k, v in origin.items())


def import_release(release: Release, data_root: Path = Path("data"), snap_root: Path = Path("snap"),
                   repo_data: Path | None = None) -> Path:  # fmt: skip
    """Import a downloaded release (its files under ``<snap>/hf/<model>/``) into ``<snap>/<task>/<model>/``."""
    folder = manifest.resolve(release.source, data_root, snap_root)
    if not folder.is_dir():
        hint = f"bash run/download_data.bash {release.group}"
        raise ReleaseImportError(f"{folder}: not downloaded; fetch it with `{hint}`")
    table = manifest.resolve(release.answers, data_root, snap_root)
    if not table.is_file() and repo_data is not None:  # the tables ship with the code
        table = repo_data / Path(release.answers).relative_to("data")
    answers = read_answers(table)
    out = manifest.resolve(release.snapshot, data_root, snap_root)
    return import_model(folder, out, release.task, answers, release.answers,
                        f"{release.repo}@{release.revision()}", release.max_seq_length)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m datatools.hf_import",
        description="Import downloaded released models (HF LxmertForQuestionAnswering) into task snapshots: "
        f"{', '.join(r.group for r in RELEASES)}. Run by run/download_data.bash after it fetches them. "
        "Arguments that name other groups or files are ignored, so the download command line can be passed as is.",
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--snap-root", type=Path, default=Path("snap"))
    p.add_argument("--if-downloaded", action="store_true",
                   help="only the named releases whose files are all there (after a download)")  # fmt: skip
    for flag in ("--list", "--dry-run", "--url"):  # the download's: nothing was fetched, nothing to import
        p.add_argument(flag, dest=flag.strip("-").replace("-", "_"), action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args, _ = build_parser().parse_known_args(argv)
    if args.list or args.dry_run or args.url:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wanted = [r for r in RELEASES if r.group in args.groups or "all" in args.groups
              or any(s.name in args.groups for s in manifest.SOURCES if s.group == r.group)]  # fmt: skip
    repo_data = Path(__file__).resolve().parents[2] / "data"
    for release in wanted:
        files = [manifest.resolve(s.dest, args.data_root, args.snap_root)
                 for s in manifest.SOURCES if s.group == release.group]  # fmt: skip
        if args.if_downloaded and not all(f.is_file() for f in files):
            continue
        try:
            out = import_release(release, args.data_root, args.snap_root, repo_data)
        except ReleaseImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{release.group}: {out} (facts: {out.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
