"""A small simulated run directory for the map tests (map stage off: the tests build maps)."""

from __future__ import annotations

from pathlib import Path

from eocausal.workflows.config import config_from_dict
from eocausal.workflows.runner import run_config

SMALL = {
    "name": "small-map",
    "seed": 0,
    "simulate": {"n_units": 600, "scene_size": 192, "chip_size": 16, "seed": 3},
    "units": {"covariates": ["x1", "x2", "x3"]},
    "chips": {"size": 16, "units_per_chunk": 128},
    "encoder": {"name": "rcf", "options": {"n_features": 64, "mode": "empirical"}},
    "estimator": {"design": "rct", "propensity": 0.5, "n_components": 10, "n_estimators": 200},
    "map": {"enabled": False},
    "compute": {"scheduler": "synchronous"},
}


def make_run(out: Path, **overrides: dict) -> Path:
    config = {**SMALL, **overrides}
    run_config(config_from_dict(config), out, progress=False)
    return out
