"""The layout: the import graph of the first-party packages has no cycle, and the counted code (what an artifact
carries, ``artifact.COUNTED_FILES``) holds no command line and imports no host-only module."""

from __future__ import annotations

import ast
from pathlib import Path

from pgolf_model import artifact

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pgolf_model", "pgolf_data", "pipelines")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """The first-party modules ``path`` imports anywhere in it (module level or inside a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from package import module``
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_the_walk_sees_relative_and_function_level_imports_and_finds_cycles():
    assert {"pgolf_model.evaluation.scoring", "pgolf_model.config"} <= GRAPH["pgolf_model.evaluation.ttt"]
    assert "pgolf_data.tokenizer.artifact" in GRAPH["pgolf_model.artifact"]  # imported inside a method
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


COUNTED = {module_name(REPO / path) for path in artifact.COUNTED_FILES}
PACKAGE_DOCS = {name for name, path in MODULES.items() if path.name == "__init__.py"}  # docstrings, no code


def test_counted_files_hold_no_command_line():
    for name in COUNTED:
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "argparse" not in imports, name
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert "main" not in functions, name


def test_counted_model_code_imports_only_counted_model_code():
    """The boundary of the layout: what an artifact carries never needs the host's presets, CLIs, trainer or export."""
    for name in COUNTED:
        host = {m for m in GRAPH[name] if m.startswith("pgolf_model.") and m not in COUNTED | PACKAGE_DOCS}
        assert not host, f"{name} imports host-only {sorted(host)}"
