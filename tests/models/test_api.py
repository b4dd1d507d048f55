"""Every public name of the estimator modules imports, and models never imports workflows."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

MODULES = ["eocausal.models.effects.ate", "eocausal.models.evaluation.calibration", "eocausal.models.effects.cate", "eocausal.models.evaluation.compare", "eocausal.models.effects.crossfit",
           "eocausal.models.effects.diagnostics", "eocausal.models.effects.estimate", "eocausal.models.effects.inputs", "eocausal.models.evaluation.plots", "eocausal.models.evaluation.rate",
           "eocausal.models.effects.intervals", "eocausal.models.effects.overlap",
           "eocausal.models.effects.results", "eocausal.models.effects.sensitivity",
           "eocausal.models.evaluation.baselines"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_import(name: str) -> None:
    module = importlib.import_module(name)
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public}"


@pytest.mark.parametrize("name", MODULES)
def test_models_do_not_import_workflows(name: str) -> None:
    path = Path(importlib.import_module(name).__file__)
    tree = ast.parse(path.read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "workflows"]


@pytest.mark.parametrize("name", MODULES)
def test_modules_stay_short(name: str) -> None:
    assert len(Path(importlib.import_module(name).__file__).read_text().splitlines()) < 500
