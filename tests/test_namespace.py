"""The original's ``tasks/`` and ``pretrain/`` folders (no ``__init__.py``) beside this project on sys.path.

Bug caught: Python prefers this project's regular ``tasks``/``pretrain`` packages, so the original's
``from tasks.vqa_model import VQAModel`` or ``from pretrain.qa_answer_table import AnswerTable``
fails as soon as this project's ``src`` is on the path, and its ``tasks.vqa_data`` would silently be
ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

PROBE = """
import tasks.vqa_data, tasks.vqa_model, pretrain.qa_answer_table, tasks.splits, lxrt.entry
print(tasks.vqa_data.WHERE, tasks.vqa_model.WHERE, pretrain.qa_answer_table.WHERE)
print(tasks.splits.__file__)
import pretrain
print(pretrain.PretrainTask.__module__)
"""


def test_original_folders_are_found_first_and_ours_stay_reachable(tmp_path: Path) -> None:
    fork = tmp_path / "fork" / "src"
    for rel in ("tasks/vqa_data.py", "tasks/vqa_model.py", "pretrain/qa_answer_table.py"):
        (fork / rel).parent.mkdir(parents=True, exist_ok=True)
        (fork / rel).write_text(f"WHERE = 'fork:{rel}'\n")
    for order in ([SRC, fork], [fork, SRC]):  # either order of PYTHONPATH, as forks set it
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, order))}
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "fork:tasks/vqa_data.py fork:tasks/vqa_model.py fork:pretrain/qa_answer_table.py"
        assert Path(lines[1]).resolve() == (SRC / "tasks" / "splits.py").resolve()
        assert lines[2] == "pretrain.task"


def test_without_a_foreign_folder_nothing_changes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "import tasks, tasks.vqa_data; print(list(tasks.__path__)); print(tasks.vqa_data.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, data = out.stdout.splitlines()
    assert path == repr([str(SRC / "tasks")])
    assert Path(data).resolve() == (SRC / "tasks" / "vqa_data.py").resolve()
