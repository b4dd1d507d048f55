"""Honest inference over many seeds: clustering, extreme propensities, IHDP, per-unit intervals.

Run ``python -m benchmarks.honest_inference SECTION [--seeds 20] [--csv FILE]``, SECTION one of

* ``clustered``: trial worlds (1,000 units) where units share an "image" (spatial blocks of
  about 7 units), treatment is assigned per image and the outcome has an image-level shock
  (sd 0.5); every CATE learner's headline ATE (groups given) and every ATE-table method.
* ``extreme``: observational worlds (1,000 units) whose propensity ``expit(3.5 s + 0.25 x1)``
  in a standardised built-up-plus-roads score ``s`` reaches below 0.001; default trimming
  (0.05); the truth is the mean true CATE over the units each method kept (its estimand), or
  the ``e (1 - e)``-weighted mean for an overlap-weighted effect.
* ``ihdp``: replications 1-9, covariates only (the image-free path), ATE table and learners.
* ``units``: per-unit CATE intervals of the causal forest, its own (BLB) and calibrated, in
  trial and observational worlds of 2,000 units.
* ``k401``: the 401(k) data, image-free DML with sensitivity bounds.
* ``uganda``: the three-way comparison (tabular, image, image+tabular) on the Uganda trial,
  grouped by ``image_key``.

Each prints a markdown table; the numbers go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.cate import CATE_METHODS
from eocausal.models.effects.crossfit import spatial_blocks
from eocausal.models.effects.diagnostics import OverlapWarning
from eocausal.models.effects.estimate import estimate_effects
from eocausal.simulator.world import WorldSpec, make_world
from scipy import special

from benchmarks.coverage_simulation import _markdown
from tests.models.worlds import load_ihdp, load_uganda, window_features

DATA = Path(os.environ.get("EOCAUSAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# forest_dr_learner, x_learner and s_learner share t_learner's headline (AIPW on the same
# folds; identical in the clustered section), so the slower section skips them
EXTREME_METHODS = ("causal_forest", "linear_dml", "dr_learner", "t_learner")
FAST = dict(n_components=None, n_estimators=200, n_jobs=1)


def _world(seed: int, n_units: int, design: str = "rct") -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    spec = WorldSpec(n_units=n_units, scene_size=256, chip_size=16, design=design, seed=seed)
    world = make_world(spec)
    return world.units, world.truth, window_features(world)


def _row(section: str, method: str, seed: int, est: float, lo: float, hi: float, se: float,
         truth: float, estimand: str, **extra: object) -> dict:
    return {"section": section, "method": method, "seed": seed, "error": est - truth,
            "covers": lo <= truth <= hi, "width": hi - lo, "z": (est - truth) / se if se > 0 else np.inf,
            "estimand": estimand.split(":")[0], **extra}


def _learners_and_table(section: str, seed: int, F: np.ndarray, C: np.ndarray, t: np.ndarray,
                        y: np.ndarray, tau: np.ndarray, e_true: np.ndarray | None, *, design: str,
                        groups: np.ndarray | None, methods: tuple[str, ...]) -> list[dict]:
    rows = []
    for method in methods:
        fit = estimate_effects(F, t, y, covariates=C, design=design, method=method, groups=groups,
                               random_state=seed, **FAST)
        truth = float(tau[fit.used].mean())
        rows.append(_row(section, method, seed, fit.ate, fit.ate_lo, fit.ate_hi, fit.ate_se, truth,
                         fit.estimand, n_used=fit.n_used))
    X = np.hstack([F, C]) if F is not None else C
    report = estimate_ate(X, t, y, design=design, cv=5, groups=groups, random_state=seed,
                          trim=0.05 if design == "observational" else None)
    keep = report.used
    for method, est in report.estimates.items():
        truth = float(tau[keep].mean())
        if est.estimand.startswith("overlap-weighted") and e_true is not None:
            w = e_true[keep] * (1 - e_true[keep])
            truth = float(np.sum(w * tau[keep]) / w.sum())
        rows.append(_row(section, "table:" + method, seed, est.estimate, est.lo, est.hi, est.se, truth,
                         est.estimand, n_used=est.n_used))
    return rows


def clustered(seed: int) -> list[dict]:
    units, truth, F = _world(seed, 1000)
    rng = np.random.default_rng(10_000 + seed)
    groups = spatial_blocks(units["x"], units["y"], block_size=_block(units, 7))
    n_g = groups.max() + 1
    t = rng.binomial(1, 0.5, n_g)[groups]
    shock = rng.normal(0, 0.5, n_g)[groups]
    tau = truth["cate"].to_numpy()
    y = truth["y0"].to_numpy() + shock + t * tau
    C = units[["x1", "x2"]].to_numpy(float)
    rows = _learners_and_table("clustered", seed, F, C, t, y, tau, None, design="rct", groups=groups,
                               methods=tuple(CATE_METHODS))
    for r in rows:
        r["units_per_cluster"] = 1000 / n_g
    return rows


def clustered_forest(seed: int) -> list[dict]:
    """The forest's clustered headline against econml's own ``ate_stderr_`` on the same fit."""
    units, truth, F = _world(seed, 1000)
    rng = np.random.default_rng(10_000 + seed)  # the same worlds as ``clustered``
    groups = spatial_blocks(units["x"], units["y"], block_size=_block(units, 7))
    n_g = groups.max() + 1
    t = rng.binomial(1, 0.5, n_g)[groups]
    shock = rng.normal(0, 0.5, n_g)[groups]
    tau = truth["cate"].to_numpy()
    y = truth["y0"].to_numpy() + shock + t * tau
    fit = estimate_effects(F, t, y, covariates=units[["x1", "x2"]].to_numpy(float), groups=groups,
                           random_state=seed, **FAST)
    se_econml = float(np.ravel(fit.model.estimator_.ate_stderr_)[0])
    truth_ate = float(tau.mean())
    z = 1.959964
    return [_row("clustered", "causal_forest (clustered IF, ours)", seed, fit.ate, fit.ate_lo, fit.ate_hi,
                 fit.ate_se, truth_ate, fit.variance),
            _row("clustered", "causal_forest (econml ate_stderr_)", seed, fit.ate, fit.ate - z * se_econml,
                 fit.ate + z * se_econml, se_econml, truth_ate, "units independent")]


def _block(units: pd.DataFrame, per_block: float) -> float:
    """Block side that gives about ``per_block`` units per occupied block."""
    span = float(max(np.ptp(units["x"]), np.ptp(units["y"])))
    return span * np.sqrt(per_block / len(units))


def extreme(seed: int) -> list[dict]:
    units, truth, F = _world(seed, 1000)
    rng = np.random.default_rng(20_000 + seed)
    s = truth["z_built_up"].to_numpy() + truth["z_roads"].to_numpy()
    s = (s - s.mean()) / s.std()
    e = special.expit(3.5 * s + 0.25 * units["x1"].to_numpy())
    t = (rng.uniform(size=e.size) < e).astype(np.int64)
    tau = truth["cate"].to_numpy()
    y = np.where(t == 1, truth["y1"], truth["y0"])
    C = units[["x1", "x2"]].to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        rows = _learners_and_table("extreme", seed, F, C, t, y, tau, e, design="observational",
                                   groups=None, methods=EXTREME_METHODS)
    for r in rows:
        r["min_true_propensity"] = float(min(e.min(), 1 - e.max()))
    return rows


def ihdp(replication: int) -> list[dict]:
    d = load_ihdp(DATA, replication)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        report = estimate_ate(d["x"], d["treatment"], d["outcome"], cv=5, trim=0.05,
                              outcome_model="linear", propensity_model="logistic", random_state=0)
        for method, est in report.estimates.items():
            truth = float(d["cate"][report.used].mean())
            rows.append(_row("ihdp", "table:" + method, replication, est.estimate, est.lo, est.hi,
                             est.se, truth, est.estimand, n_used=est.n_used))
        for method in ("causal_forest", "dr_learner", "linear_dml"):
            fit = estimate_effects(None, d["treatment"], d["outcome"], covariates=d["x"],
                                   design="observational", method=method, random_state=0, **FAST)
            truth = float(d["cate"][fit.used].mean())
            rows.append(_row("ihdp", method, replication, fit.ate, fit.ate_lo, fit.ate_hi, fit.ate_se,
                             truth, fit.estimand, n_used=fit.n_used))
    return rows


def units_coverage(seed: int) -> list[dict]:
    rows = []
    for design in ("rct", "observational"):
        units, truth, F = _world(seed, 2000, design)
        tau = truth["cate"].to_numpy()
        t, y = units["treatment"].to_numpy(), units["outcome"].to_numpy()
        C = units[["x1", "x2"]].to_numpy(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)
            fit = estimate_effects(F, t, y, covariates=C, design=design, random_state=seed, **FAST)
        k = fit.used
        own = (fit.cate_lo[k] <= tau[k]) & (tau[k] <= fit.cate_hi[k])
        cal = (fit.cate_lo_calibrated[k] <= tau[k]) & (tau[k] <= fit.cate_hi_calibrated[k])
        rows.append({"section": "units", "method": f"causal_forest ({design})", "seed": seed,
                     "own_coverage": own.mean(), "own_width": np.mean(fit.cate_hi - fit.cate_lo),
                     "calibrated_coverage": cal.mean(),
                     "calibrated_width": np.mean(fit.cate_hi_calibrated - fit.cate_lo_calibrated),
                     "root_pehe": float(np.sqrt(np.mean((fit.cate[k] - tau[k]) ** 2))),
                     "bias_bound": fit.calibration["bias_bound"]})
    return rows


def k401() -> pd.DataFrame:
    from eocausal.models.effects.estimate import estimate_effects as fit_effects

    frame = pd.read_csv(DATA / "known_answer" / "sipp1991_401k.csv")
    cov = ["age", "inc", "educ", "fsize", "marr", "twoearn", "db", "pira", "hown"]
    t, y = frame["e401"].to_numpy(), frame["net_tfa"].to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        report = estimate_ate(frame[cov], t, y, cv=5, trim=0.01, random_state=0)
        rows = [{"method": "table:" + m, "estimate": e.estimate, "lo": e.lo, "hi": e.hi,
                 "estimand": e.estimand[:40]} for m, e in report.estimates.items()]
        s = report.sensitivity
        rows.append({"method": "AIPW sensitivity (c_y=c_t=0.05)", "estimate": s.estimate, "lo": s.lo,
                     "hi": s.hi, "estimand": f"RV {s.robustness_value:.3f}"})
        for method in ("linear_dml", "causal_forest"):
            fit = fit_effects(None, t, y, covariates=frame[cov], design="observational", method=method,
                              trim=0.01, random_state=0, **FAST)
            rows.append({"method": method, "estimate": fit.ate, "lo": fit.ate_lo, "hi": fit.ate_hi,
                         "estimand": fit.estimand[:40]})
            sens = fit.sensitivity
            rows.append({"method": f"{method} sensitivity", "estimate": sens["estimate"], "lo": sens["lo"],
                         "hi": sens["hi"], "estimand": f"RV {sens['robustness_value']:.3f}"})
    print(s.sentence())
    return pd.DataFrame(rows).set_index("method")


def uganda() -> pd.DataFrame:
    from eocausal.models.evaluation.baselines import compare_feature_sets

    units, _ = load_uganda(DATA)
    feats = [c for c in units.columns if c.startswith("band")]
    cov = ["X1", "X3", "X5"]  # X2/X4/X6 are treatment interactions, never covariates
    result = compare_feature_sets(units[feats], units[cov], units["W"], units["Y"],
                                  propensity=None, groups=units["image_key"], groups_name="image_key",
                                  n_components=None, n_estimators=200, n_bootstrap=200, n_jobs=1)
    result.figure().savefig("/tmp/uganda_feature_sets.png", dpi=110)
    return result.table


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    g = frame.groupby(["section", "method"], sort=False)
    return g.agg(n=("seed", "nunique"), coverage=("covers", "mean"), mean_error=("error", "mean"),
                 rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))), mean_width=("width", "mean"),
                 max_abs_z=("z", lambda z: float(np.max(np.abs(z)))),
                 estimand=("estimand", "first"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["clustered", "clustered_forest", "extreme", "ihdp", "units",
                                            "k401", "uganda"])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.section in ("k401", "uganda"):
        table = k401() if args.section == "k401" else uganda()
        print(_markdown(table.round(4)))
        print(f"({time.perf_counter() - start:.0f} s)")
        return 0
    run = {"clustered": clustered, "clustered_forest": clustered_forest, "extreme": extreme, "ihdp": ihdp, "units": units_coverage}[args.section]
    seeds = range(1, 10) if args.section == "ihdp" else range(args.seeds)
    rows: list[dict] = []
    for seed in seeds:
        rows += run(seed)
        print(f"{args.section} seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        if args.csv:
            pd.DataFrame(rows).to_csv(args.csv, index=False)
    frame = pd.DataFrame(rows)
    if args.section == "units":
        table = frame.groupby("method").mean(numeric_only=True).drop(columns="seed")
    else:
        table = summarise(frame)
    print(_markdown(table))
    print(f"({len(list(seeds))} seeds, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
