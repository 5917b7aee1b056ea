"""What a fine-tuned snapshot is: its task, its model sizes and the run settings saved beside it.

A task snapshot (``BEST.pth`` in the original key layout) holds only tensors. Everything the shapes
fix (hidden size, layer counts, feature width, head width) is read from them; the rest (attention
heads, sequence length, task, answer table) comes from the facts file beside it (``BEST.json``,
:mod:`lxrt.snapshot`), else from the ``config.json`` that a run of this code writes beside it, else,
for a snapshot of the original code, from BERT's conventions (64-d heads) and the head: a head on two
pooled vectors is the registered pair task's, a head on one is the task whose answer table (or fixed
classes) has its width. What a task is asked and answers is its class's ``presentation``
(:mod:`tasks.presentation`): nothing here knows a task by name.

Without ``--load``, ``ask`` and the page take the best photo model under ``snap/``
(:func:`default_checkpoint`): a question-answering snapshot that reads the detector's 2048-d
features, the released models first, then by the task's priority; else the demo's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from datatools.hf_import import RELEASES
from engine.config import TrainConfig
from lxrt import CheckpointError, LXRTConfig, read_state_dict, resolve_checkpoint
from lxrt.snapshot import SnapshotFacts, SnapshotFactsError, facts_path, read_facts
from tasks.base import FinetuneTask
from tasks.presentation import Presentation
from tasks.registry import task_class, tasks_where

ENCODER = "lxrt_encoder.model.bert."
DEMO_CHECKPOINT = Path("snap/demo/BEST.pth")
PHOTO_FEAT_DIM = LXRTConfig().visual_feat_dim  # the bottom-up-attention detector's 2048-d region features
NO_MODEL_HINT = (
    f"get a released model and the detector with `bash run/download_data.bash butd-detector {RELEASES[0].group}`, "
    "or build the demo's shape model with `bash run/demo.bash`, or pass --load"
)
TABS = {"question": "a question (or sentence) about one image", "pair": "a statement about two images",
        "gallery": "a caption and a gallery of images", "box": "an expression naming a region of an image"}  # fmt: skip
"""The page's tabs: which tasks each serves is :func:`tab_of` their presentation."""


class AskError(ValueError):
    """Input that cannot be asked about: the message says what was given and what was expected."""


def tab_of(presentation: Presentation) -> str:
    """The page tab (and command-line form) of a task: one of :data:`TABS`."""
    if presentation.images in ("pair", "gallery"):
        return presentation.images
    return "box" if presentation.output == "box" else "question"


def does(presentation: Presentation) -> str:
    """What a model of this presentation does, in words (for messages)."""
    p = presentation
    return {"question": f"answers a {p.text} about one image (ask)", "pair": f"judges a {p.text} about two images "
            "(verify)", "gallery": f"ranks images against a {p.text}, or {p.text}s against an image (rank)",
            "box": f"finds the region an {p.text} names (locate)"}[tab_of(p)]  # fmt: skip


def find_task(name: str) -> type[FinetuneTask]:
    """The registered task ``name`` (or alias) that ``ask`` can present; else an :class:`AskError`."""
    try:
        cls = task_class(name.lower())
    except KeyError as err:
        raise AskError(str(err.args[0])) from None
    if getattr(cls, "presentation", None) is None:
        raise AskError(f"task {cls.name!r} is not one ask presents (its class declares no presentation)")
    return cls  # type: ignore[return-value]


def images_per_example(cls: type[FinetuneTask]) -> int:
    return 2 if cls.presentation is not None and cls.presentation.images == "pair" else 1


@dataclass(frozen=True)
class CheckpointInfo:
    """A task snapshot: where it is, which task it answers, its model config and head width."""

    path: Path
    task: str
    model: LXRTConfig
    num_outputs: int  # answers, classes, 2 (true/false) or the matching head's width
    run: TrainConfig | None  # the config.json beside the file, when there is one
    data_root: Path  # where the task's answer table (and the demo's data) is read
    facts: SnapshotFacts | None = None  # the facts file beside the file (BEST.json), when there is one

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def task_class(self) -> type[FinetuneTask]:
        return find_task(self.task)

    @property
    def presentation(self) -> Presentation:
        return self.task_class.presentation  # type: ignore[return-value]

    @property
    def max_seq_length(self) -> int:
        if self.facts is not None:
            return self.facts.max_seq_length
        return (self.run or TrainConfig()).max_seq_length


def snapshot_facts(path: Path) -> SnapshotFacts | None:
    """The facts file beside ``path`` (None when there is none); a broken one is an :class:`AskError`."""
    try:
        return read_facts(path)
    except SnapshotFactsError as err:
        raise AskError(str(err)) from None


def facts_task(facts: SnapshotFacts, path: Path) -> str:
    """The facts' task, registered and presentable; else an :class:`AskError`."""
    try:
        return find_task(facts.task).name
    except AskError as err:
        raise AskError(f"{path}: {facts_path(path)} says task {facts.task!r}: {err}") from None


def run_task(run: TrainConfig | None) -> str | None:
    """The task of a run's config.json, when it is a registered task ``ask`` presents."""
    if run is None or not run.task:
        return None
    try:
        return find_task(run.task).name
    except AskError:
        return None


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


def head_kind(state: Mapping[str, Tensor], hidden: int) -> tuple[str, int] | None:
    """``("pair", outputs)`` for a classifier head on two pooled vectors, ``("one", outputs)`` on one; None
    when ``state`` has no classifier head (``logit_fc.*``)."""
    first, last = state.get("logit_fc.0.weight"), state.get("logit_fc.3.weight")
    if first is None or last is None:
        return None
    return ("pair" if int(first.shape[1]) == 2 * hidden else "one"), int(last.shape[0])


def no_head(state: Mapping[str, Tensor], source: str) -> AskError:
    prefixes = sorted({k.split(".")[0] for k in state})
    hint = " (a pretraining snapshot: fine-tune it first)" if "bert" in prefixes else ""
    return AskError(f"{source}: no answer head (logit_fc.*) and no facts file saying its task; top-level keys "
                    f"{prefixes}{hint}")  # fmt: skip


def fixed_widths(data_root: Path) -> dict[str, int]:
    """Head width of each one-image task whose outputs are fixed: its answer table under ``data_root``, or its
    classes."""
    sizes = {}
    for cls in tasks_where(lambda c: getattr(c, "presentation", None) is not None and images_per_example(c) == 1):
        folder = cls.answer_folder()
        if folder is None:
            if cls.output_classes() is not None:
                sizes[cls.name] = len(cls.output_classes())
            continue
        try:
            sizes[cls.name] = len(json.loads((data_root / folder / "trainval_label2ans.json").read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            continue
    return sizes


def guess_task(kind: str, outputs: int, root: Path, path: Path) -> str:
    """The task of an original snapshot (no facts, no config.json) from its head."""
    if kind == "pair":
        pairs = [c.name for c in tasks_where(lambda c: getattr(c, "presentation", None) is not None
                                             and images_per_example(c) == 2)]  # fmt: skip
        if len(pairs) == 1:
            return pairs[0]
        raise AskError(f"{path}: a head on two images; pass --task ({', '.join(pairs) or 'no pair task registered'})")
    matches = [t for t, n in fixed_widths(root).items() if n == outputs]
    if len(matches) != 1:
        found = f"tasks of that width: {', '.join(matches)}" if matches else "no task has that width"
        raise AskError(f"{path}: a one-image head with {outputs} outputs and no facts file or config.json saying its "
                       f"task (answer tables under {root} and fixed classes: {found}); pass --task")  # fmt: skip
    return matches[0]


def check_fits(cls: type[FinetuneTask], kind: str, outputs: int, path: Path) -> None:
    """``--task`` (or the saved task) ``cls`` must fit the head the file has."""
    if (kind == "pair") != (images_per_example(cls) == 2):
        have = "a head on two images" if kind == "pair" else f"a one-image head ({outputs} outputs)"
        shown = cls.presentation
        assert shown is not None
        raise AskError(f"{path}: --task {cls.name}, but the file has {have}; a {cls.name} model {does(shown)}")


def inspect_checkpoint(
    load: str | Path | None = None, task: str | None = None, data_root: str | Path | None = None
) -> tuple[CheckpointInfo, dict[str, Tensor]]:
    """Read a task snapshot and decide its task and model config; errors say what does not fit.

    ``load`` is a path with or without ``.pth`` (``snap/vqa/NAME/BEST``); None means the best one under
    ``snap/``; ``"demo"`` the demo's.
    """
    wanted = find_task(task) if task else None
    if load is None:
        load = default_checkpoint()
        if load is None:
            raise AskError(f"no model under snap/: {NO_MODEL_HINT}")
    elif str(load) == "demo":
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
    head = head_kind(state, model.hidden_size)
    root = Path(data_root if data_root is not None else (run.data_root if run is not None else "data"))
    if facts is not None:
        found, outputs = facts_task(facts, path), facts.num_outputs
        if head is not None and head[1] != outputs:
            raise AskError(f"{path}: the head has {head[1]} outputs but {facts_path(path)} says {outputs}")
        if wanted is not None and wanted.name != found:
            said = facts_path(path)
            raise AskError(f"{path}: --task {wanted.name}, but {said} says it is a snapshot of task {found}")
    else:
        if head is None:
            raise no_head(state, str(path))
        kind, outputs = head
        saved = run_task(run)
        for cls in (wanted, find_task(saved) if saved else None):
            if cls is not None:
                check_fits(cls, kind, outputs, path)
        found = wanted.name if wanted else saved or guess_task(kind, outputs, root, path)
    info = CheckpointInfo(path=path, task=found, model=model, num_outputs=outputs, run=run, data_root=root,
                          facts=facts)  # fmt: skip
    return info, state


@dataclass(frozen=True)
class SnapshotSummary:
    """What the model picker and the default choice need to know of a snapshot, read cheaply: from its
    facts file, else its run's config.json, else its tensors. ``problem``: why it cannot be read."""

    path: Path
    task: str | None = None  # a registered task; None: a one-image head of unknown task
    feat_dim: int | None = None
    outputs: int | None = None
    released: bool = False  # imported from a release (its facts name the source)
    problem: str | None = None

    @property
    def label(self) -> str:
        if self.problem is not None:
            return f"{self.path} (unreadable: {self.problem[:60]})"
        return f"{self.path} ({self.task or f'{self.outputs} outputs'})"

    @property
    def presentation(self) -> Presentation | None:
        return None if self.task is None or self.problem else find_task(self.task).presentation

    @property
    def tab(self) -> str | None:
        """The page tab the snapshot belongs to (a head of unknown task: the question tab)."""
        if self.problem is not None:
            return None
        return "question" if self.presentation is None else tab_of(self.presentation)

    @property
    def answers(self) -> bool:
        """A model that answers questions about one image (its task's output is an answer distribution)."""
        return self.tab == "question" and (self.presentation is None or self.presentation.output == "answers")

    @property
    def photo(self) -> bool:
        shown = self.presentation
        return self.answers and (shown is None or shown.photos) and self.feat_dim == PHOTO_FEAT_DIM


def describe_snapshot(path: Path) -> SnapshotSummary:
    """:class:`SnapshotSummary` of ``path``; never raises."""
    try:
        facts = snapshot_facts(path)
        if facts is not None:
            return SnapshotSummary(path, facts_task(facts, path), facts.model.visual_feat_dim, facts.num_outputs,
                                   released="source" in facts.extra)  # fmt: skip
        run = read_run_config(path.parent)
        if run_task(run) is not None:
            return SnapshotSummary(path, run_task(run), run.model.visual_feat_dim)  # type: ignore[union-attr]
        state = read_state_dict(path)
        hidden = int(state[ENCODER + "embeddings.word_embeddings.weight"].shape[1])
        head = head_kind(state, hidden)
        if head is None:
            raise no_head(state, str(path))
        feat_dim = int(state[ENCODER + "encoder.visn_fc.visn_fc.weight"].shape[1])
        task = guess_task(*head, Path("data"), path) if head[0] == "pair" else None
        return SnapshotSummary(path, task, feat_dim, head[1])
    except (AskError, CheckpointError, KeyError, OSError) as err:
        return SnapshotSummary(path, problem=str(err))


def find_snapshots(root: str | Path = "snap", name: str = "BEST.pth") -> list[SnapshotSummary]:
    """Every ``BEST.pth`` under ``root``, sorted by path."""
    return [describe_snapshot(p) for p in sorted(Path(root).rglob(name))]


def default_checkpoint(root: str | Path = "snap") -> Path | None:
    """The model ``ask`` and the page use without ``--load``: the best photo model under ``root``, else the
    demo's, else another question-answering model; within each, released imports first, then by the task's
    ``presentation.priority``, then the newest. None when there is none."""

    def rank(s: SnapshotSummary) -> tuple:
        shown = s.presentation
        group = 0 if s.photo else 1 if shown is not None and not shown.photos else 2
        return group, not s.released, -(shown.priority if shown else -1), -s.path.stat().st_mtime

    found = [s for s in find_snapshots(root) if s.answers]
    return min(found, key=rank).path if found else None


def find_checkpoints(root: str | Path = "snap", name: str = "BEST.pth") -> list[tuple[str, str]]:
    """``(label, path)`` of every ``BEST.pth`` under ``root``, label = ``path (task)``; sorted.

    The task comes from the facts file or the run's ``config.json``, else from the head's shape (the pair
    task, or ``N outputs``). Unreadable files are listed with the reason instead of a task.
    """
    return [(s.label, str(s.path)) for s in find_snapshots(root, name)]
