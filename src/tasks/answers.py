"""Answer vocabularies: the VQA/GQA label tables and the 9500-answer pretraining table.

Files (original release):
    data/vqa/trainval_ans2label.json   {answer: label}, 3129 answers ("" is label 0)
    data/vqa/trainval_label2ans.json   [answer, ...] indexed by label
    data/gqa/trainval_{ans2label,label2ans}.json   the same for GQA's 1842 answers
    data/lxmert/all_ans.json           [{"ans": answer, "dsets": ["vqa", "gqa", "visual7w"]}, ...]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lxrt.fileio import describe_file
from lxrt.qa_answer_table import convert_ans


class DataFormatError(ValueError):
    """A data file that does not follow the expected format; the message names file and record."""


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; errors name the file (and line/column for syntax errors)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        text = err.doc.strip()
        closer = {"[": "]", "{": "}"}.get(text[:1])
        cut = err.pos >= len(err.doc.rstrip()) or (closer is not None and not text.endswith(closer))
        hint = "; the file looks truncated" if cut else ""
        kind = describe_file(path)
        if kind != "a JSON document":
            hint = f"; it is {kind}, not JSON" + (" (was the download redirected?)" if "HTML" in kind else "")
        raise DataFormatError(f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg}){hint}") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from None


class AnswerTable:
    """A task's answer <-> label table (VQA: 3129 answers, GQA: 1842)."""

    def __init__(self, ans2label: Mapping[str, int], label2ans: Sequence[str], source: str = "answer table"):
        self.source = source
        if not isinstance(ans2label, Mapping) or not all(
            isinstance(a, str) and isinstance(i, int) and not isinstance(i, bool) for a, i in ans2label.items()
        ):
            raise DataFormatError(f"{source}: ans2label must map answer strings to integer labels")
        if isinstance(label2ans, (str, bytes)) or not all(isinstance(a, str) for a in label2ans):
            raise DataFormatError(f"{source}: label2ans must be a list of answer strings")
        if len(ans2label) != len(label2ans):
            raise DataFormatError(
                f"{source}: ans2label has {len(ans2label)} answers but label2ans has {len(label2ans)}"
            )
        for ans, label in ans2label.items():
            if not 0 <= label < len(label2ans) or label2ans[label] != ans:
                shown = label2ans[label] if 0 <= label < len(label2ans) else "<out of range>"
                raise DataFormatError(f"{source}: ans2label[{ans!r}] = {label} but label2ans[{label}] = {shown!r}")
        self.ans2label: dict[str, int] = dict(ans2label)
        self.label2ans: list[str] = list(label2ans)

    @classmethod
    def from_files(cls, ans2label_path: str | Path, label2ans_path: str | Path) -> AnswerTable:
        return cls(
            load_json(ans2label_path),
            load_json(label2ans_path),
            source=f"{ans2label_path} / {label2ans_path}",
        )

    @classmethod
    def for_task(cls, folder_name: str, root: str | Path = "data") -> AnswerTable:
        """``<root>/<folder_name>/trainval_ans2label.json`` and ``trainval_label2ans.json``."""
        folder = Path(root) / folder_name
        return cls.from_files(folder / "trainval_ans2label.json", folder / "trainval_label2ans.json")

    @property
    def num_answers(self) -> int:
        return len(self.label2ans)

    def __len__(self) -> int:
        return len(self.label2ans)

    def __contains__(self, ans: object) -> bool:
        return ans in self.ans2label

    def answer(self, label: int) -> str:
        return self.label2ans[label]

    def target(self, label: Mapping[str, float], skip_unknown: bool = False, where: str = "") -> np.ndarray:
        """Soft score vector (num_answers,) float32 of a ``{answer: score}`` label.

        An answer outside the table is an error naming ``where`` (VQA), or is skipped when
        ``skip_unknown`` (GQA, whose table does not cover every training answer).
        """
        out = np.zeros(self.num_answers, dtype=np.float32)
        for ans, score in label.items():
            index = self.ans2label.get(ans)
            if index is not None:
                out[index] = score
            elif not skip_unknown:
                raise DataFormatError(f"{where}: answer {ans!r} is not in {self.source}")
        return out


class PretrainAnswerTable:
    """The 9500 answers of the pretraining QA head (``data/lxmert/all_ans.json``), in file order.

    ``qa_sets`` keeps only answers used by one of those datasets (``--qaSets vqa,gqa``); ids are
    then positions in the filtered list, as in the original.
    """

    def __init__(self, path: str | Path = "data/lxmert/all_ans.json", qa_sets: Iterable[str] | None = None):
        self.path = Path(path)
        entries = load_json(self.path)
        if not isinstance(entries, list):
            raise DataFormatError(f"{self.path}: expected a list of {{'ans': ..., 'dsets': [...]}} entries")
        answers: list[str] = []
        for i, entry in enumerate(entries):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("ans"), str)
                or not isinstance(entry.get("dsets"), list)
            ):
                raise DataFormatError(f"{self.path}: entry {i} must be {{'ans': str, 'dsets': [str, ...]}}")
        known = sorted({d for entry in entries for d in entry["dsets"]})
        wanted = None
        if qa_sets is not None:
            wanted = {s.strip() for s in qa_sets if s.strip()}
            unknown = sorted(wanted - set(known))
            if unknown:
                raise ValueError(f"unknown QA sets {unknown}; {self.path} has answers of {known}")
        for entry in entries:
            if wanted is None or wanted & set(entry["dsets"]):
                answers.append(entry["ans"])
        self.answers = answers
        self.ans2id: dict[str, int] = {}
        for i, ans in enumerate(answers):
            if ans in self.ans2id:
                raise DataFormatError(f"{self.path}: answer {ans!r} is listed twice")
            self.ans2id[ans] = i
        if not answers:
            raise DataFormatError(f"{self.path}: no answers left for QA sets {sorted(wanted or [])}")

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, ans: object) -> bool:
        return ans in self.ans2id

    def used(self, ans: str) -> bool:
        return ans in self.ans2id

    def id(self, ans: str) -> int:
        return self.ans2id[ans]

    def answer(self, ans_id: int) -> str:
        return self.answers[ans_id]

    convert_ans = staticmethod(convert_ans)
