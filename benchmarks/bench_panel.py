"""Panel DML over simulated panels whose unit effects correlate with the images and uptake.

Run ``python -m benchmarks.bench_panel --seeds 20``. Each seed simulates a panel
(:func:`eocausal.simulator.panel.make_panel`: 300 units, 5 yearly periods, half of the
unit effect's variance visible in the pixels), writes its scenes, ingests them as dated
sequences, encodes every date with RCF (64 features, reduced to 10 components) and runs the
four estimators of :func:`eocausal.models.effects.panel.estimate_panel`. Printed: per method
the mean error, RMSE, coverage of the 95% interval, mean SE, and for pooled DML its mean
distance from the Mundlak estimate in its own SEs and how often it was flagged as biased;
then the speed of ``estimate_panel`` (Mundlak only) against a bare DoubleMLPLPR fit on the
same matrix in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from eocausal.models.effects.crossfit import make_outcome_model
from eocausal.models.effects.panel import estimate_panel
from eocausal.models.encoders.registry import build_encoder
from eocausal.models.features.panel import encode_panel
from eocausal.pipeline.ingest import ingest
from eocausal.simulator.panel import simulate_panel
from eocausal.workflows.simkit import markdown_table


def panel_study(seed: int, workdir: Path, **spec: float) -> pd.DataFrame:
    """Simulate, ingest, encode and estimate one panel; one row per estimator."""
    written = simulate_panel(workdir / f"world{seed}", seed=seed, **spec)
    units = gpd.read_file(written.units_path)
    store = ingest(units, [str(p) for p in written.scene_paths], workdir / f"tiles{seed}.zarr",
                   chip_size=16).store
    features = encode_panel(store, build_encoder("rcf", store.n_bands, n_features=64, seed=0),
                            device="cpu")
    table = pd.read_parquet(written.panel_path).merge(features.table, on=["unit_id", "period"])
    result = estimate_panel(table, covariates=["x1"], n_components=10, random_state=seed)
    rows = result.table().reset_index()
    rows["seed"], rows["truth"] = seed, written.effect
    return rows, table


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(error=rows["estimate"] - rows["truth"],
                       covers=(rows["lo"] <= rows["truth"]) & (rows["truth"] <= rows["hi"]))
    out = rows.groupby("method", sort=False).agg(
        mean_error=("error", "mean"), rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))),
        coverage=("covers", "mean"), mean_se=("se", "mean"),
        bias_in_own_se=("diff_from_mundlak_se", "mean"),
        flagged_biased=("biased", lambda b: float(np.mean([bool(v) for v in b]))
                        if b.notna().any() else np.nan))
    pooled = rows[rows["method"] == "pooled"]
    out.loc["pooled", "error_in_own_se"] = float((pooled["error"] / pooled["se"]).mean())
    return out


def speed(table: pd.DataFrame, repeats: int = 3) -> dict[str, float]:
    """estimate_panel (Mundlak) against a bare DoubleMLPLPR on the same columns."""
    import doubleml as dml

    feats = [c for c in table.columns if c[:1] == "f" and c[1:].isdigit()]
    bare_frame = table[["unit_id", "period", "treatment", "outcome", "x1", *feats]].copy()
    bare_frame["period"] = pd.factorize(bare_frame["period"], sort=True)[0]
    best = {"bare": np.inf, "eocausal": np.inf}
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = dml.DoubleMLPanelData(bare_frame, "outcome", "treatment", "period", "unit_id",
                                     x_cols=["x1", *feats], static_panel=True)
        dml.DoubleMLPLPR(data, make_outcome_model("linear"), make_outcome_model("linear"),
                         approach="cre_general").fit()
        best["bare"] = min(best["bare"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        estimate_panel(table, covariates=["x1"], methods=["mundlak"], period_effects=False)
        best["eocausal"] = min(best["eocausal"], time.perf_counter() - t0)
    best["ratio"] = best["bare"] / best["eocausal"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        parts = [panel_study(seed, Path(tmp)) for seed in range(args.seeds)]
    rows = pd.concat([p[0] for p in parts], ignore_index=True)
    print(f"{args.seeds} seeds, {time.time() - start:.0f} s\n")
    print(markdown_table(summarise(rows)))
    timing = speed(parts[0][1])
    print(f"\nspeed: bare DoubleMLPLPR {timing['bare']:.2f} s, estimate_panel "
          f"{timing['eocausal']:.2f} s, ratio {timing['ratio']:.2f}")


if __name__ == "__main__":
    main()
