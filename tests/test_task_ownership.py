"""Every task owns its knowledge: its name appears as a string literal only in its own files.

Bug caught: a shared module (splits, completeness, submission files, the data check, synthetic
data, ``ask``, the page, the engine) growing an ``if task == "vqa"`` branch or a table keyed by task
name, so that a new task has to edit it and a renamed task breaks it silently. A task's own files
are ``src/tasks/<name>.py`` and ``src/tasks/<name>_*.py``, or the whole package of a task defined
outside ``tasks`` (``pretrain``, ``demo``). Docstrings, run scripts, docs and tests are not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.registry import task_class, task_names

SRC = Path(__file__).resolve().parents[1] / "src"


def own_files(name: str) -> set[Path]:
    cls = task_class(name)
    module = Path(__import__(cls.__module__, fromlist=["_"]).__file__).resolve()
    if module.parent != (SRC / "tasks").resolve():
        return set(module.parent.rglob("*.py"))
    return {p.resolve() for p in (SRC / "tasks").glob("*.py") if p.stem == name or p.stem.startswith(name + "_")}


def docstrings(tree: ast.AST) -> set[int]:
    """Strings that are statements of their own (module, class, function and attribute docstrings)."""
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def mentions(text: str, names: list[str]) -> list[str]:
    """The task names ``text`` spells as a whole word, in any case (a word: letters, digits and ``_``,
    so ``vg_gqa_obj36.tsv``, a file of the original release, does not name GQA, but ``data/gqa/`` does)."""
    return [name for name in names if re.search(rf"\b{re.escape(name)}\b", text, flags=re.IGNORECASE)]


def test_mentions_reads_words_not_parts() -> None:
    names = ["vqa", "easy_vqa", "gqa", "nlvr2"]
    assert mentions("data/vqa/train.json", names) == ["vqa"]
    assert mentions("snap/easy_vqa/BEST.pth", names) == ["easy_vqa"]
    assert mentions("not a VQA test split", names) == ["vqa"]
    assert mentions("features-nlvr2", names) == ["nlvr2"]
    assert mentions("vqa_lxr955 vg_gqa_obj36 aqvqa", names) == []


def test_every_task_is_found() -> None:
    assert {"vqa", "gqa", "nlvr2", "snli_ve", "easy_vqa", "lxmert_pretrain"} <= set(task_names())


@pytest.mark.parametrize("package", ["lxrt", "datatools", "features", "engine", "tasks", "pretrain", "demo", "ask"])
def test_no_task_name_outside_its_own_files(package: str) -> None:
    tasks = task_names()
    owners = {name: own_files(name) for name in tasks}
    leaks = []
    for path in sorted((SRC / package).rglob("*.py")):
        mine = [name for name in tasks if path.resolve() in owners[name]]
        for line, text in literals(path):
            for name in mine:  # a task's own name, also spelt "easy-VQA", is not another task's
                text = re.sub(re.escape(name).replace("_", "[-_ ]"), " ", text, flags=re.IGNORECASE)
            for found in mentions(text, tasks):
                if path.resolve() not in owners[found]:
                    leaks.append(f"{path.relative_to(SRC)}:{line}: {text!r} names task {found!r}")
    assert not leaks, "task knowledge outside the task's own files:\n" + "\n".join(leaks)
