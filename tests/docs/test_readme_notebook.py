"""The README's notebook section runs verbatim, and its numbers are the right ones."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _notebook_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## In a notebook"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_notebook_section_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_notebook_block(), "README.md", "exec"), namespace)  # noqa: S102
    effects, run = namespace["effects"], namespace["run"]
    # the simulated world's true ATE is close to 1 (BASE_ATE); the interval must cover it
    truth = run.summary["truth"]
    assert truth["interval_covers_truth"] and abs(truth["ate_error"]) < 0.35
    assert abs(effects.summary["ate"] - run.summary["ate"]) < 0.3
    # effects come back in units order, one per unit
    assert list(effects.effects["unit_id"]) == list(namespace["units"]["unit_id"])
    assert "ATE" in printed.getvalue() and "RATE AUTOC" in printed.getvalue()
    assert run.summary["map"]["n_predicted"] > 0 and run.figures["effect_map"].is_file()


def test_integer_ids_join_the_features_of_their_own_store(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    import eocausal

    monkeypatch.chdir(tmp_path)
    world = eocausal.simulate("w", n_units=120, scene_size=96, chip_size=16, seed=2)
    units = eocausal.read_units(world.units_path)
    units["unit_id"] = np.arange(len(units)) * 7  # a study's integer ids
    tiles = eocausal.ingest(units.assign(unit_id=units["unit_id"].astype(str)),
                            world.scene_paths, "t.zarr", chip_size=16)
    features = eocausal.encode(tiles.store, "rcf", options={"n_features": 16})
    assert not pd.api.types.is_integer_dtype(features["unit_id"])  # the store keeps strings
    shuffled = units.sample(frac=1.0, random_state=0)
    result = eocausal.estimate(shuffled, features, out="e", n_components=4, n_estimators=20,
                               propensity=0.5)
    assert list(result.effects["unit_id"]) == list(shuffled["unit_id"])
    assert pd.api.types.is_integer_dtype(result.effects["unit_id"])
