"""What a fine-tuned snapshot is: its task, its model sizes and the run settings saved beside it.

A task snapshot (``BEST.pth`` in the original key layout) holds only tensors. Everything the shapes
fix (hidden size, layer counts, feature width, answer count) is read from them; the rest (attention
heads, sequence length, task, answer table) comes from the facts file beside it (``BEST.json``,
:mod:`lxrt.snapshot`), else from the ``config.json`` that a run of this code writes beside it, else,
for a snapshot of the original code, from BERT's conventions (64-d heads) and the answer count (VQA
3129, GQA 1842; NLVR2 has a 2-way head on two pooled vectors).

Without ``--load``, ``ask`` and the page take the best photo model under ``snap/``
(:func:`default_checkpoint`): a question-answering snapshot that reads the detector's 2048-d
features, the released models first, VQA before GQA; else the demo's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from engine.config import TrainConfig
from lxrt import CheckpointError, LXRTConfig, read_state_dict, resolve_checkpoint
from lxrt.snapshot import SnapshotFacts, SnapshotFactsError, facts_path, read_facts

ENCODER = "lxrt_encoder.model.bert."
QA_TASKS = ("vqa", "gqa", "easy_vqa")
TASKS = (*QA_TASKS, "nlvr2")
TASK_ALIASES = {"demo": "easy_vqa"}
DEMO_CHECKPOINT = Path("snap/demo/BEST.pth")
PHOTO_FEAT_DIM = LXRTConfig().visual_feat_dim  # the bottom-up-attention detector's 2048-d region features
NO_MODEL_HINT = (
    "get the released VQA model and the detector with `bash run/download_data.bash butd-detector vqa-model`, "
    "or build the demo's shape model with `bash run/demo.bash`, or pass --load"
)


class AskError(ValueError):
    """Input that cannot be asked about: the message says what was given and what was expected."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A task snapshot: where it is, which task it answers, its model config and head width."""

    path: Path
    task: str
    model: LXRTConfig
    num_outputs: int  # answers (VQA/GQA/easy-VQA) or 2 (NLVR2)
    run: TrainConfig | None  # the config.json beside the file, when there is one
    data_root: Path  # where the task's answer table (and the demo's data) is read
    facts: SnapshotFacts | None = None  # the facts file beside the file (BEST.json), when there is one

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def max_seq_length(self) -> int:
        if self.facts is not None:
            return self.facts.max_seq_length
        return (self.run or TrainConfig()).max_seq_length


def normalize_task(task: str | None) -> str | None:
    """``None``, or a known task name (``demo`` means the easy-VQA demo)."""
    if task is None or task == "":
        return None
    name = TASK_ALIASES.get(task.lower(), task.lower())
    if name not in TASKS:
        raise AskError(f"unknown task {task!r}; expected one of {', '.join(TASKS)} (or 'demo')")
    return name


def snapshot_facts(path: Path) -> SnapshotFacts | None:
    """The facts file beside ``path`` (None when there is none); a broken one is an :class:`AskError`."""
    try:
        return read_facts(path)
    except SnapshotFactsError as err:
        raise AskError(str(err)) from None


def facts_task(facts: SnapshotFacts, path: Path) -> str:
    """The facts' task as ``ask`` names it; a task ``ask`` cannot serve is an :class:`AskError`."""
    task = TASK_ALIASES.get(facts.task, facts.task)
    if task not in TASKS:
        raise AskError(f"{path}: {facts_path(path)} says task {facts.task!r}; ask answers questions with "
                       f"{', '.join(QA_TASKS)} models and judges statements with nlvr2 models")  # fmt: skip
    return task


def read_run_config(folder: Path) -> TrainConfig | None:
    """The ``config.json`` a training run wrote in ``folder``, or None when there is none."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise AskError(f"{path}: not a run configuration of this code ({err})") from None


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def model_config(state: Mapping[str, Tensor], base: LXRTConfig | None, source: str) -> LXRTConfig:
    """The encoder config of a task snapshot: shapes from ``state``, the rest from ``base``.

    Without ``base`` the head count follows BERT (64 dimensions per head).
    """
    try:
        words = state[ENCODER + "embeddings.word_embeddings.weight"]
        positions = state[ENCODER + "embeddings.position_embeddings.weight"]
        types = state[ENCODER + "embeddings.token_type_embeddings.weight"]
        visn = state[ENCODER + "encoder.visn_fc.visn_fc.weight"]
        boxes = state[ENCODER + "encoder.visn_fc.box_fc.weight"]
    except KeyError as err:
        pretraining = any(k.startswith("bert.") for k in state)
        hint = ": a pretraining snapshot (bert.*); fine-tune it first" if pretraining else ""
        raise AskError(f"{source}: not an LXMERT task snapshot (no {err.args[0]!r}){hint}") from None
    hidden = int(words.shape[1])
    layers = {
        "llayers": _count(state, re.escape(ENCODER) + r"encoder\.layer\.(\d+)\."),
        "xlayers": _count(state, re.escape(ENCODER) + r"encoder\.x_layers\.(\d+)\."),
        "rlayers": _count(state, re.escape(ENCODER) + r"encoder\.r_layers\.(\d+)\."),
    }
    ffn_key = next(
        (k for k in state if k.endswith("intermediate.dense.weight") or k.endswith("inter.dense.weight")), None
    )
    changes = dict(
        vocab_size=int(words.shape[0]),
        hidden_size=hidden,
        max_position_embeddings=int(positions.shape[0]),
        type_vocab_size=int(types.shape[0]),
        visual_feat_dim=int(visn.shape[1]),
        visual_pos_dim=int(boxes.shape[1]),
        **layers,
    )
    if ffn_key is not None:
        changes["intermediate_size"] = int(state[ffn_key].shape[0])
    if base is None or hidden != base.hidden_size:
        changes["num_attention_heads"] = max(1, hidden // 64) if hidden % 64 == 0 else 1
    return (base or LXRTConfig()).replace(**changes)


def head_kind(state: Mapping[str, Tensor], hidden: int, source: str) -> tuple[str, int]:
    """``("nlvr2", 2)`` or ``("qa", number of answers)`` from the shapes of ``logit_fc``."""
    first, last = state.get("logit_fc.0.weight"), state.get("logit_fc.3.weight")
    if first is None or last is None:
        prefixes = sorted({k.split(".")[0] for k in state})
        hint = " (a pretraining snapshot: fine-tune it first)" if "bert" in prefixes else ""
        raise AskError(f"{source}: no answer head (logit_fc.*); top-level keys {prefixes}{hint}")
    if int(first.shape[1]) == 2 * hidden:
        return "nlvr2", int(last.shape[0])
    return "qa", int(last.shape[0])


def answer_table_sizes(data_root: Path) -> dict[str, int]:
    """Answer count of each QA task whose table is under ``data_root``."""
    sizes = {}
    for task in QA_TASKS:
        path = data_root / task / "trainval_label2ans.json"
        try:
            sizes[task] = len(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
    return sizes


def inspect_checkpoint(
    load: str | Path | None = None, task: str | None = None, data_root: str | Path | None = None
) -> tuple[CheckpointInfo, dict[str, Tensor]]:
    """Read a task snapshot and decide its task and model config; errors say what does not fit.

    ``load`` is a path with or without ``.pth`` (``snap/vqa/NAME/BEST``); None means the demo's.
    """
    wanted = normalize_task(task)
    if load is None:
        load = default_checkpoint()
        if load is None:
            raise AskError(f"no model under snap/: {NO_MODEL_HINT}")
    elif str(load) in ("demo", "easy_vqa"):
        load = DEMO_CHECKPOINT
    try:
        path = resolve_checkpoint(load, suffixes=(".pth", ""))
    except CheckpointError as err:
        raise AskError(str(err)) from None
    state = read_state_dict(path)
    facts = snapshot_facts(path)
    run = read_run_config(path.parent)
    base = facts.model if facts is not None else (run.model if run is not None else None)
    model = model_config(state, base, str(path))
    kind, outputs = head_kind(state, model.hidden_size, str(path))
    root = Path(data_root if data_root is not None else (run.data_root if run is not None else "data"))
    if facts is not None:
        saved, said_by = facts_task(facts, path), facts_path(path)
        if outputs != facts.num_outputs:
            raise AskError(f"{path}: the head has {outputs} outputs but {said_by} says {facts.num_outputs}")
    else:
        saved = normalize_task(run.task) if run is not None and run.task in (*TASKS, *TASK_ALIASES) else None
        said_by = path.parent / "config.json"

    if kind == "nlvr2":
        found = "nlvr2"
    elif wanted == "nlvr2":
        raise AskError(f"{path}: --task nlvr2, but the file is a question-answering snapshot ({outputs} answers)")
    elif wanted in QA_TASKS:
        found = wanted
    elif saved in QA_TASKS:
        found = saved
    else:
        matches = [t for t, n in answer_table_sizes(root).items() if n == outputs]
        if len(matches) != 1:
            tables = f"answer tables of that size: {', '.join(matches)}" if matches else "none has that size"
            raise AskError(
                f"{path}: a question-answering head with {outputs} answers and no config.json saying its task "
                f"(answer tables under {root}: {tables}); "
                "pass --task vqa|gqa|demo"
            )
        found = matches[0]
    if wanted is not None and wanted != found:  # only a question-answering task asked of an NLVR2 head
        raise AskError(f"{path}: --task {wanted}, but the file is an NLVR2 snapshot (2-way head on two images)")
    if saved is not None and saved != found and wanted is None:
        raise AskError(f"{path}: {said_by} says task {saved!r} but the head is {found!r}")
    info = CheckpointInfo(path=path, task=found, model=model, num_outputs=outputs, run=run, data_root=root,
                          facts=facts)  # fmt: skip
    return info, state


@dataclass(frozen=True)
class SnapshotSummary:
    """What the model picker and the default choice need to know of a snapshot, read cheaply: from its
    facts file, else its run's config.json, else its tensors. ``problem``: why it cannot be read."""

    path: Path
    task: str | None = None  # a task of TASKS, or "qa" (a question-answering head of unknown task)
    feat_dim: int | None = None
    outputs: int | None = None
    released: bool = False  # imported from a release (its facts name the source)
    problem: str | None = None

    @property
    def label(self) -> str:
        if self.problem is not None:
            return f"{self.path} (unreadable: {self.problem[:60]})"
        what = f"qa, {self.outputs} answers" if self.task == "qa" else self.task
        return f"{self.path} ({what})"

    @property
    def question_answering(self) -> bool:
        return self.task is not None and self.task != "nlvr2" and self.problem is None

    @property
    def photo(self) -> bool:
        return self.question_answering and self.task != "easy_vqa" and self.feat_dim == PHOTO_FEAT_DIM


def describe_snapshot(path: Path) -> SnapshotSummary:
    """:class:`SnapshotSummary` of ``path``; never raises."""
    try:
        facts = snapshot_facts(path)
        if facts is not None:
            return SnapshotSummary(path, facts_task(facts, path), facts.model.visual_feat_dim, facts.num_outputs,
                                   released="source" in facts.extra)  # fmt: skip
        run = read_run_config(path.parent)
        if run is not None and run.task in (*TASKS, *TASK_ALIASES):
            return SnapshotSummary(path, normalize_task(run.task), run.model.visual_feat_dim)
        state = read_state_dict(path)
        hidden = int(state[ENCODER + "embeddings.word_embeddings.weight"].shape[1])
        kind, outputs = head_kind(state, hidden, str(path))
        feat_dim = int(state[ENCODER + "encoder.visn_fc.visn_fc.weight"].shape[1])
        return SnapshotSummary(path, "nlvr2" if kind == "nlvr2" else "qa", feat_dim, outputs)
    except (AskError, CheckpointError, KeyError, OSError) as err:
        return SnapshotSummary(path, problem=str(err))


def find_snapshots(root: str | Path = "snap", name: str = "BEST.pth") -> list[SnapshotSummary]:
    """Every ``BEST.pth`` under ``root``, sorted by path."""
    return [describe_snapshot(p) for p in sorted(Path(root).rglob(name))]


def default_checkpoint(root: str | Path = "snap") -> Path | None:
    """The model ``ask`` and the page use without ``--load``: the best photo model under ``root``, else the
    demo's, else another question-answering model; within each, released imports first, then by task in
    the order of ``QA_TASKS``, then the newest. None when there is none."""
    order = {t: i for i, t in enumerate(QA_TASKS)}

    def rank(s: SnapshotSummary) -> tuple:
        group = 0 if s.photo else 1 if s.task == "easy_vqa" else 2
        return group, not s.released, order.get(s.task or "", len(order)), -s.path.stat().st_mtime

    found = [s for s in find_snapshots(root) if s.question_answering]
    return min(found, key=rank).path if found else None


def find_checkpoints(root: str | Path = "snap", name: str = "BEST.pth") -> list[tuple[str, str]]:
    """``(label, path)`` of every ``BEST.pth`` under ``root``, label = ``path (task)``; sorted.

    The task comes from the facts file or the run's ``config.json``, else from the head's shape
    (``nlvr2``/``qa, N answers``). Unreadable files are listed with the reason instead of a task.
    """
    return [(s.label, str(s.path)) for s in find_snapshots(root, name)]
