"""What a fine-tuned snapshot is: its task, its model sizes and the run settings saved beside it.

A task snapshot (``BEST.pth`` in the original key layout) holds only tensors. Everything the shapes
fix (hidden size, layer counts, feature width, answer count) is read from them; the rest (attention
heads, sequence length, data root, task) comes from the ``config.json`` that a run of this code
writes beside it, or, for a snapshot of the original code, from BERT's conventions (64-d heads)
and the answer count (VQA 3129, GQA 1842; NLVR2 has a 2-way head on two pooled vectors).
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

ENCODER = "lxrt_encoder.model.bert."
QA_TASKS = ("vqa", "gqa", "easy_vqa")
TASKS = (*QA_TASKS, "nlvr2")
TASK_ALIASES = {"demo": "easy_vqa"}
DEMO_CHECKPOINT = Path("snap/demo/BEST.pth")


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

    @property
    def folder(self) -> Path:
        return self.path.parent


def normalize_task(task: str | None) -> str | None:
    """``None``, or a known task name (``demo`` means the easy-VQA demo)."""
    if task is None or task == "":
        return None
    name = TASK_ALIASES.get(task.lower(), task.lower())
    if name not in TASKS:
        raise AskError(f"unknown task {task!r}; expected one of {', '.join(TASKS)} (or 'demo')")
    return name


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
        if not DEMO_CHECKPOINT.is_file():
            raise AskError(f"no demo model at {DEMO_CHECKPOINT}: run `bash run/demo.bash` first, or pass --load")
        load = DEMO_CHECKPOINT
    try:
        path = resolve_checkpoint(load, suffixes=(".pth", ""))
    except CheckpointError as err:
        raise AskError(str(err)) from None
    state = read_state_dict(path)
    run = read_run_config(path.parent)
    model = model_config(state, run.model if run is not None else None, str(path))
    kind, outputs = head_kind(state, model.hidden_size, str(path))
    root = Path(data_root if data_root is not None else (run.data_root if run is not None else "data"))
    saved = normalize_task(run.task) if run is not None and run.task in (*TASKS, *TASK_ALIASES) else None

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
        raise AskError(f"{path}: {path.parent / 'config.json'} says task {saved!r} but the head is {found!r}")
    info = CheckpointInfo(path=path, task=found, model=model, num_outputs=outputs, run=run, data_root=root)
    return info, state


def find_checkpoints(root: str | Path = "snap", name: str = "BEST.pth") -> list[tuple[str, str]]:
    """``(label, path)`` of every ``BEST.pth`` under ``root``, label = ``path (task)``; sorted.

    The task comes from the run's ``config.json``, else from the head's shape (``nlvr2``/``qa``).
    Unreadable files are listed with the reason instead of a task.
    """
    found = []
    for path in sorted(Path(root).rglob(name)):
        try:
            run = read_run_config(path.parent)
            task = normalize_task(run.task) if run is not None and run.task in (*TASKS, *TASK_ALIASES) else None
            if task is None:
                state = read_state_dict(path)
                hidden = int(state[ENCODER + "embeddings.word_embeddings.weight"].shape[1])
                kind, outputs = head_kind(state, hidden, str(path))
                task = "nlvr2" if kind == "nlvr2" else f"qa, {outputs} answers"
        except (AskError, CheckpointError, KeyError) as err:
            task = f"unreadable: {str(err)[:60]}"
        found.append((f"{path} ({task})", str(path)))
    return found
