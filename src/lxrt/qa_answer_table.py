"""The pretraining QA answer table and ``load_lxmert_qa``, with the original code's API.

``load_lxmert_qa(path, model, label2ans)`` loads a pretraining snapshot into a task model built
around ``lxrt.entry.LXRTEncoder``: the encoder, and the 9500-answer QA head remapped onto the
task's answers (answers the pretraining table lacks get zero weights).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from torch import nn

from .checkpoint import CheckpointError, load_state, read_state_dict, remap_answer_head

DEFAULT_ALL_ANS = Path("data/lxmert/all_ans.json")
SHIPPED_ALL_ANS = Path(__file__).resolve().parents[2] / DEFAULT_ALL_ANS

# The normalizations of ``convert_ans``.
ANS_CONVERT: dict[str, str] = {
    "a man": "man",
    "the man": "man",
    "a woman": "woman",
    "the woman": "woman",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "grey": "gray",
}


def convert_ans(ans: str) -> str:
    """The original's answer normalization for the pretraining table.

    Lowercase; drop one trailing "."; drop leading "a ", then "an ", then "the "; map number words
    one..ten to digits and "grey" to "gray".
    """
    if not ans:
        return ""
    ans = ans.lower()
    if ans[-1] == ".":
        ans = ans[:-1].strip()
    for article in ("a ", "an ", "the "):
        if ans.startswith(article):
            ans = ans[len(article) :].strip()
    return ANS_CONVERT.get(ans, ans)


class AnswerTable:
    """The answers of ``all_ans.json`` in file order; with ``dsets``, only those used by one of them."""

    ANS_CONVERT = ANS_CONVERT

    def __init__(self, dsets: Iterable[str] | None = None, path: str | Path | None = None) -> None:
        if path is None:  # the working directory's data/, else the shipped copy
            path = DEFAULT_ALL_ANS if DEFAULT_ALL_ANS.is_file() else SHIPPED_ALL_ANS
        self.path = Path(path)
        with open(self.path, encoding="utf-8") as f:
            self.all_ans = json.load(f)
        try:
            if dsets is not None:
                wanted = set(dsets)
                self.anss = [a["ans"] for a in self.all_ans if set(a["dsets"]) & wanted]
            else:
                self.anss = [a["ans"] for a in self.all_ans]
        except (TypeError, KeyError):
            raise ValueError(f"{self.path}: expected a list of {{'ans': ..., 'dsets': [...]}} entries") from None
        self.ans_set = set(self.anss)
        self._id2ans_map = self.anss
        self._ans2id_map = {ans: i for i, ans in enumerate(self.anss)}
        if len(self._ans2id_map) != len(self.anss):
            raise ValueError(f"{self.path}: an answer is listed twice")

    convert_ans = staticmethod(convert_ans)

    def ans2id(self, ans: str) -> int:
        return self._ans2id_map[ans]

    def id2ans(self, ans_id: int) -> str:
        return self._id2ans_map[ans_id]

    def ans2id_map(self) -> dict[str, int]:
        return self._ans2id_map.copy()

    def id2ans_map(self) -> list[str]:
        return self._id2ans_map.copy()

    def used(self, ans: str) -> bool:
        return ans in self.ans_set

    def all_answers(self) -> list[str]:
        return self.anss.copy()

    @property
    def num_answers(self) -> int:
        return len(self.anss)


def load_lxmert_qa(path: str, model: nn.Module, label2ans: Sequence[str] | Mapping[int, str]) -> None:
    """Load ``<path>_LXRT.pth`` into ``model`` (``lxrt_encoder`` + ``logit_fc``): the whole encoder
    (every encoder weight must be in the file) and the QA head remapped onto ``label2ans``."""
    file = Path(f"{path}_LXRT.pth")
    print(f"Load QA pre-trained LXMERT from {path} ")
    state = read_state_dict(file)
    bert = {k: v for k, v in state.items() if k.startswith("bert.")}
    head = {k[len("answer_head."):]: v for k, v in state.items() if k.startswith("answer_head.")}
    if "logit_fc.3.weight" not in head or "logit_fc.3.bias" not in head:
        raise CheckpointError(f"{file}: no pretraining QA head (answer_head.logit_fc.3.*)")
    if isinstance(label2ans, Mapping):
        if sorted(label2ans) != list(range(len(label2ans))):
            raise ValueError("label2ans must give an answer for every label 0..N-1")
        answers = [label2ans[i] for i in range(len(label2ans))]
    else:
        answers = list(label2ans)

    table = AnswerTable()
    if head["logit_fc.3.weight"].shape[0] != table.num_answers:
        raise CheckpointError(
            f"{file}: the QA head has {head['logit_fc.3.weight'].shape[0]} answers, "
            f"{table.path} lists {table.num_answers}"
        )
    weight, bias, loaded = remap_answer_head(
        head["logit_fc.3.weight"], head["logit_fc.3.bias"], table.anss, answers, convert_ans
    )
    head["logit_fc.3.weight"], head["logit_fc.3.bias"] = weight, bias
    print(f"Loaded {loaded} answers from LXRTQA pre-training and {len(answers) - loaded} not\n")

    encoder = model.lxrt_encoder.model
    missing = sorted(set(encoder.state_dict()) - set(bert))
    if missing:
        raise CheckpointError(f"{file}: encoder weights missing from the file: {', '.join(missing[:8])}")
    load_state(encoder, bert, strict=False, source=str(file))
    unknown = sorted(set(head) - set(model.state_dict()))
    if unknown:
        raise CheckpointError(f"{file}: the model has no {', '.join(unknown)} for the QA head")
    load_state(model, head, strict=False, source=str(file))
    print(f"Loaded the encoder and the QA head from {file}", file=sys.stderr)
