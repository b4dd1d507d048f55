"""The demo itself (2,000 units, RCT): every output exists and the truth is recovered."""

from __future__ import annotations

import json

from eocausal.workflows.cli import main


def test_demo_recovers_the_true_effects(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("manifest.json", "tiles.zarr", "skipped_units.csv", "features.parquet",
                 "effects.gpkg", "summary.json", "maps/effect.tif", "maps/effect.png", "maps/effect.html"):
        assert (out / name).exists(), name
        assert str(out / name) in printed
    summary = json.loads((out / "summary.json").read_text())
    truth = summary["truth"]
    assert summary["n_used"] == 2000
    assert truth["interval_covers_truth"] is True
    assert abs(truth["ate_error"]) < 0.15
    assert truth["spearman_cate"] > 0.85
    assert truth["root_pehe"] < 0.8
    assert summary["map"]["spearman_with_true_surface"] > 0.85
