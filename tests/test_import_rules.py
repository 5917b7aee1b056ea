"""The import rules of pyproject.toml hold, and ``lint-imports`` fails when code breaks them.

Bugs caught: an import that points up the layers (the library reaching into the tasks), an import
circle (two modules needing each other, even through a function-level import), a private name
taken from another package, and a task module importing another task's. A second, independent check
(an AST scan of every file and networkx's cycle search) finds no circle either.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lxrt", "datatools", "features", "engine", "tasks", "pretrain", "demo", "ask")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the code and the rules, to break on purpose."""
    for folder in ("src", "bench", "tools"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")


def test_the_project_keeps_its_import_rules() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_upward_import_breaks_the_layers(tree: Path) -> None:
    add_line(tree / "src/lxrt/config.py", "def _later():\n    from tasks import splits  # noqa\n    return splits")
    result = lint(tree)
    assert result.returncode != 0
    assert "lxrt is not allowed to import tasks" in result.stdout
    assert "lxrt.config -> tasks.splits" in result.stdout


def test_a_circle_breaks_the_rules_even_inside_a_function(tree: Path) -> None:
    add_line(tree / "src/lxrt/config.py", "def _later():\n    from lxrt import encoder  # noqa\n    return encoder")
    result = lint(tree)
    assert result.returncode != 0
    assert "No import circles BROKEN" in result.stdout
    assert "lxrt.config <-> lxrt.encoder" in result.stdout


def test_a_private_name_from_another_package_is_refused(tree: Path) -> None:
    add_line(tree / "src/tasks/splits.py", "from lxrt.tokenizer import _is_cjk  # noqa")
    result = lint(tree)
    assert result.returncode != 0
    assert "tasks.splits (l." in result.stdout and "takes _is_cjk from lxrt.tokenizer" in result.stdout


def test_a_task_importing_another_task_is_refused(tree: Path) -> None:
    add_line(tree / "src/tasks/gqa.py", "from tasks import vqa  # noqa")
    result = lint(tree)
    assert result.returncode != 0
    assert "Each task owns itself" in result.stdout and "BROKEN" in result.stdout


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every project module ``module`` imports, at any depth of its file (functions included);
    ``from pkg import sub`` imports the module ``pkg.sub`` when there is one, else ``pkg`` itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def project_graph() -> nx.DiGraph:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / "src" / package).rglob("*.py"):
            parts = path.relative_to(ROOT / "src").with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        for target in imports_of(path, module, set(files)):
            if target in files and target != module:
                graph.add_edge(module, target)
    return graph


def test_no_module_takes_part_in_an_import_circle() -> None:
    circles = [sorted(c) for c in nx.strongly_connected_components(project_graph()) if len(c) > 1]
    assert circles == []


def test_the_circle_finder_sees_a_circle() -> None:
    """The scan above must see function-level imports, or it proves nothing."""
    graph = project_graph()
    assert graph.has_edge("ask.asker", "lxrt")  # a top-level import
    graph.add_edge("lxrt.fileio", "ask.asker")
    assert any(len(c) > 1 for c in nx.strongly_connected_components(graph))
