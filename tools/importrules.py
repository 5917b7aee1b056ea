"""Two import rules that ``lint-imports`` checks beside its built-in contracts (see pyproject.toml).

- ``acyclic_modules``: no module imports itself through other modules (no import circle), whether
  the import sits at the top of a file or inside a function.
- ``private_names``: no module takes a private name (``_name``) from a module of another top-level
  package: what one package offers another is public, or it is not offered.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter import Contract, ContractCheck, fields, output


def import_cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module among ``modules`` (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative, so deep import chains cannot overflow the stack
        nonlocal counter
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return sorted(cycles)


class AcyclicModulesContract(Contract):
    """No import circle among the modules of ``packages`` (all root packages when not given)."""

    type_name = "acyclic_modules"
    packages = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = set(self.packages or ()) or {m for m in graph.modules if "." not in m}  # type: ignore[arg-type]
        modules = {m for m in graph.modules if m.split(".")[0] in roots}
        cycles = import_cycles(graph, modules)
        return ContractCheck(kept=not cycles, warnings=[], metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Modules that import each other (directly or through others):", bold=False)
        output.new_line()
        for cycle in check.metadata["cycles"]:
            output.print_error(f"- {' <-> '.join(cycle)}", bold=False)
        output.new_line()


def private_names_taken(module: str, path: Path) -> list[tuple[int, str, str]]:
    """``(line, source module, name)`` for each ``from X import _name`` in ``module``'s file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join([*base, source] if source else base)
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append((node.lineno, source, alias.name))
    return found


def module_file(module: str) -> Path | None:
    """The source file of ``module``, found from its top-level package without importing anything."""
    root, _, rest = module.partition(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations)), *rest.split(".")) if rest else None
    if base is None:
        return Path(spec.origin) if spec.origin else None
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class PrivateNamesContract(Contract):
    """No ``from other_package.module import _private`` across the top-level packages."""

    type_name = "private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        links = []
        for module in sorted(graph.modules):
            path = module_file(module)
            if path is None:
                continue
            for line, source, name in private_names_taken(module, path):
                if source.split(".")[0] != module.split(".")[0]:
                    links.append(f"{module} (l.{line}) takes {name} from {source}")
        return ContractCheck(kept=not links, warnings=[], metadata={"links": links})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Private names taken from another package:", bold=False)
        output.new_line()
        for link in check.metadata["links"]:
            output.print_error(f"- {link}", bold=False)
        output.new_line()
