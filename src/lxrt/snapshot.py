"""What a snapshot is, written beside its weights: ``BEST.pth`` -> ``BEST.json``.

The weights keep the original key layout (the original code still loads them); the facts file says
which task they answer, the model's sizes, the identity of the answer table the head was trained
on and the recipe of the run. Loaders read it when it is there and fall back to reading the shapes
of the tensors when it is not (the original's own snapshots). A safetensors export carries the same
facts in its metadata under ``FACTS_KEY``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import LXRTConfig
from .fileio import atomic_write_text

FACTS_FORMAT = "lxmert-snapshot"
FACTS_VERSION = 1
FACTS_KEY = "lxmert_snapshot"
"""The safetensors metadata key holding the facts as JSON."""


class SnapshotFactsError(ValueError):
    """A facts file that is not what this code writes; the message names the file and the field."""


@dataclass(frozen=True)
class AnswerTableId:
    """Which answer table a head's rows follow: its name, size and a digest of its answers in order."""

    name: str
    count: int
    sha256: str

    @classmethod
    def of(cls, answers: Sequence[str], name: str) -> AnswerTableId:
        """The identity of ``answers`` (label order matters: row i is answer i)."""
        digest = hashlib.sha256("\n".join(answers).encode("utf-8")).hexdigest()
        return cls(name=name, count=len(answers), sha256=digest)

    def matches(self, answers: Sequence[str]) -> bool:
        return AnswerTableId.of(answers, self.name).sha256 == self.sha256 and len(answers) == self.count


@dataclass(frozen=True)
class SnapshotFacts:
    """The facts of one snapshot. ``num_outputs``: the task head's output width (answers, classes);
    ``images_per_example``: images the model reads per example (NLVR2: 2); ``extra``: what a task
    adds about itself (JSON values)."""

    task: str
    model: LXRTConfig
    num_outputs: int
    answers: AnswerTableId | None = None
    recipe: str = ""
    images_per_example: int = 1
    max_seq_length: int = 20
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FACTS_FORMAT,
            "version": FACTS_VERSION,
            "task": self.task,
            "model": self.model.to_dict(),
            "num_outputs": self.num_outputs,
            "answers": None if self.answers is None else vars(self.answers).copy(),
            "recipe": self.recipe,
            "images_per_example": self.images_per_example,
            "max_seq_length": self.max_seq_length,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<facts>") -> SnapshotFacts:
        if not isinstance(d, Mapping) or d.get("format") != FACTS_FORMAT:
            raise SnapshotFactsError(f"{source}: not a snapshot facts file (no \"format\": \"{FACTS_FORMAT}\")")
        if d.get("version") != FACTS_VERSION:
            raise SnapshotFactsError(f"{source}: facts version {d.get('version')!r}, this code reads {FACTS_VERSION}")
        try:
            answers = d.get("answers")
            return cls(
                task=_typed(d, "task", str, source),
                model=LXRTConfig.from_dict(dict(_typed(d, "model", Mapping, source))),
                num_outputs=_typed(d, "num_outputs", int, source),
                answers=None if answers is None else AnswerTableId(**answers),
                recipe=d.get("recipe", ""),
                images_per_example=d.get("images_per_example", 1),
                max_seq_length=d.get("max_seq_length", 20),
                extra=dict(d.get("extra") or {}),
            )
        except (TypeError, ValueError) as err:
            raise SnapshotFactsError(f"{source}: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _typed(d: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    if key not in d:
        raise SnapshotFactsError(f"{source}: no {key!r} field")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SnapshotFactsError(f"{source}: field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def facts_path(weights: str | Path) -> Path:
    """``BEST.pth`` -> ``BEST.json``; ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def write_facts(weights: str | Path, facts: SnapshotFacts) -> Path:
    """Write ``facts`` beside ``weights`` (atomically)."""
    return atomic_write_text(facts_path(weights), facts.to_json())


def read_facts(weights: str | Path) -> SnapshotFacts | None:
    """The facts beside ``weights`` (or, for a safetensors file, in its metadata), or None when there
    are none (an original snapshot)."""
    path = facts_path(weights)
    if Path(weights).suffix == ".safetensors":
        inside = _safetensors_facts(Path(weights))
        if inside is not None or not path.is_file():
            return inside
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SnapshotFactsError(f"{path}: not valid JSON ({err})") from None
    return SnapshotFacts.from_dict(data, source=str(path))


def _safetensors_facts(weights: Path) -> SnapshotFacts | None:
    if not weights.is_file():
        return None
    from safetensors import safe_open  # only safetensors files need it

    with safe_open(str(weights), framework="pt") as f:
        text = (f.metadata() or {}).get(FACTS_KEY)
    if text is None:
        return None
    try:
        return SnapshotFacts.from_dict(json.loads(text), source=f"{weights} (metadata)")
    except json.JSONDecodeError as err:
        raise SnapshotFactsError(f"{weights}: its {FACTS_KEY} metadata is not valid JSON ({err})") from None
