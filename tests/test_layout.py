"""Package structure: one-way dependencies, no import circles, no private names, every public
name importable, and an import name (``eocausal``) that a user's own folders cannot shadow."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> import package (see pyproject.toml's package-dir).
FOLDERS = {"eocausal": "eocausal", "pipeline": "eocausal.pipeline",
           "simulator": "eocausal.simulator", "models": "eocausal.models",
           "workflows": "eocausal.workflows"}
BARE = {"pipeline", "models", "workflows", "configs", "simulator"}
# Import package -> packages of ours it must never import (workflows -> models -> pipeline).
FORBIDDEN = {
    "eocausal.pipeline": ("eocausal.models", "eocausal.workflows", "eocausal.simulator"),
    "eocausal.simulator": ("eocausal.models", "eocausal.workflows"),
    "eocausal.models": ("eocausal.workflows",),
    # The image side and the effect side of models never import each other.
    "eocausal.models.encoders": ("eocausal.models.effects", "eocausal.models.evaluation"),
    "eocausal.models.features": ("eocausal.models.effects", "eocausal.models.evaluation"),
    "eocausal.models.effects": ("eocausal.models.encoders", "eocausal.models.features",
                                "eocausal.models.heterogeneity", "torch"),
    "eocausal.models.evaluation": ("eocausal.models.encoders", "eocausal.models.features",
                                   "eocausal.models.heterogeneity", "torch"),
}


def _modules() -> dict[str, Path]:
    """Every module of the import package, by its dotted name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import in a file, deferred ones included."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def test_import_package_has_every_folder() -> None:
    assert set(MODULES) >= {"eocausal", "eocausal.errors", "eocausal.pipeline.store",
                            "eocausal.models.effects.estimate", "eocausal.workflows.cli"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_bare_imports_of_our_folders(name: str) -> None:
    bare = [m for m, _ in _imports(MODULES[name]) if m.split(".")[0] in BARE]
    assert not bare, f"{name} imports {bare}: use eocausal.{bare[0]}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    for name, path in MODULES.items():
        if name != package and not name.startswith(package + "."):
            continue
        for module, _ in _imports(path):
            bad = [f for f in FORBIDDEN[package] if module == f or module.startswith(f + ".")]
            assert not bad, f"{name} imports {module}"


def test_no_private_names_across_modules() -> None:
    for name, path in MODULES.items():
        for module, names in _imports(path):
            if module == "__future__":
                continue
            private_path = [p for p in module.split(".") if p.startswith("_")]
            private_names = [n for n in names if n.startswith("_")]
            assert not private_path and not private_names, \
                f"{name} imports private {module} {private_names}"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(path):
            targets = [module, *(f"{module}.{n}" for n in names)]
            graph[name] |= {t for t in targets if t in MODULES and t != name}
    return graph


def test_no_import_circles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in _package_parents(node):
                continue  # a module importing its own package's lazy namespace is not a circle
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _package_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


@pytest.mark.parametrize("package", ["eocausal", "eocausal.pipeline", "eocausal.simulator",
                                     "eocausal.models", "eocausal.workflows"])
def test_every_public_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_no_print_in_library_code() -> None:
    for name, path in MODULES.items():
        if name.startswith("eocausal.workflows"):
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"print() in {name}"
