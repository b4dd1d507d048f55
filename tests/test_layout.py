"""Package structure: one-way dependencies and every public name importable."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"pipeline": {"models", "workflows"}, "models": {"workflows"}, "workflows": set()}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = _imported_top_levels(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_importlib_strings_respect_layers():
    # Lazy exports import by string; check those strings too.
    for package, forbidden in FORBIDDEN.items():
        text = (ROOT / package / "__init__.py").read_text()
        assert not any(f'"{name}.' in text for name in forbidden)


@pytest.mark.parametrize("package", ["pipeline", "models", "workflows"])
def test_every_public_name_imports(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_no_print_in_library_code():
    for package in ("pipeline", "models"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id == "print"]
            assert not calls, f"print() in {path.relative_to(ROOT)}"
