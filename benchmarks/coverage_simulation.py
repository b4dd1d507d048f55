"""Interval coverage of the ATE estimators over repeated simulated worlds.

Run ``python -m benchmarks.coverage_simulation --seeds 50``. Each seed draws two small worlds
(:func:`pipeline.world.make_world`, 800 units, 256-pixel scene): an observational one, where
built-up area and roads raise both the chance of treatment and the outcome, and a trial. The
image features are band means, deviations and edge strengths in each unit's window
(``tests.models.worlds``). Printed per design and method: coverage of the 95% interval of
the sample ATE, mean error, RMSE, mean interval width and, for the observational design, the
mean fraction of the naive bias removed; for the trial, how often the held-out RATE (AUTOC)
of a DR learner is significantly positive, and the per-unit coverage of the causal forest.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.diagnostics import OverlapWarning
from eocausal.models.effects.estimate import estimate_effects
from eocausal.models.evaluation.compare import evaluate_heterogeneity

from tests.models.worlds import small_world

N_UNITS = 800


def _observational(seed: int) -> list[dict]:
    w = small_world(seed, design="observational", n_units=N_UNITS)
    X = np.hstack([w["features"], w["covariates"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        report = estimate_ate(X, w["treatment"], w["outcome"], cv=5, random_state=seed)
    naive_error = report.estimates["difference_in_means"].estimate - w["ate"]
    rows = []
    for method, est in report.estimates.items():
        rows.append({"design": "observational", "method": method, "seed": seed,
                     "error": est.estimate - w["ate"], "covers": est.lo <= w["ate"] <= est.hi,
                     "width": est.hi - est.lo,
                     "bias_removed": 1 - abs(est.estimate - w["ate"]) / abs(naive_error)})
    fit = estimate_effects(w["features"], w["treatment"], w["outcome"], covariates=w["covariates"],
                           design="observational", n_components=None, n_estimators=200, n_jobs=1,
                           random_state=seed)
    rows.append({"design": "observational", "method": "causal_forest", "seed": seed,
                 "error": fit.ate - w["ate"], "covers": fit.ate_lo <= w["ate"] <= fit.ate_hi,
                 "width": fit.ate_hi - fit.ate_lo,
                 "bias_removed": 1 - abs(fit.ate - w["ate"]) / abs(naive_error)})
    return rows


def _trial(seed: int, rate: bool) -> list[dict]:
    w = small_world(seed, design="rct", n_units=N_UNITS)
    X = np.hstack([w["features"], w["covariates"]])
    report = estimate_ate(X, w["treatment"], w["outcome"], design="rct", propensity=0.5, cv=5,
                          methods=["difference_in_means", "aipw", "linear_dml", "dr_learner"],
                          random_state=seed)
    rows = [{"design": "rct", "method": m, "seed": seed, "error": e.estimate - w["ate"],
             "covers": e.lo <= w["ate"] <= e.hi, "width": e.hi - e.lo}
            for m, e in report.estimates.items()]
    fit = estimate_effects(w["features"], w["treatment"], w["outcome"], covariates=w["covariates"],
                           propensity=0.5, n_components=None, n_estimators=200, n_jobs=1,
                           random_state=seed)
    unit_cover = float(np.mean((fit.cate_lo <= w["cate"]) & (w["cate"] <= fit.cate_hi)))
    rows.append({"design": "rct", "method": "causal_forest", "seed": seed, "error": fit.ate - w["ate"],
                 "covers": fit.ate_lo <= w["ate"] <= fit.ate_hi, "width": fit.ate_hi - fit.ate_lo,
                 "cate_unit_coverage": unit_cover})
    if rate:
        het = evaluate_heterogeneity(w["features"], w["treatment"], w["outcome"],
                                     covariates=w["covariates"], propensity=0.5, method="dr_learner",
                                     n_components=None, n_bootstrap=100, n_jobs=1, random_state=seed)
        rows.append({"design": "rct", "method": "rate_autoc(dr_learner)", "seed": seed,
                     "error": np.nan, "covers": het.autoc.lo > 0, "width": het.autoc.hi - het.autoc.lo,
                     "autoc": het.autoc.estimate, "blp_slope": het.blp.slope})
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Coverage, mean error, RMSE, mean width (and bias removed) per design and method."""
    grouped = frame.groupby(["design", "method"], sort=False)
    table = grouped.agg(n_seeds=("seed", "nunique"), coverage=("covers", "mean"),
                        mean_error=("error", "mean"), rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))),
                        mean_width=("width", "mean"))
    for extra in ("bias_removed", "cate_unit_coverage", "autoc", "blp_slope"):
        if extra in frame:
            table[extra] = grouped[extra].mean()
    return table


def _markdown(table: pd.DataFrame) -> str:
    """A markdown table without the optional ``tabulate`` dependency."""
    frame = table.reset_index()
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"

    def cell(v: object) -> str:
        return "" if isinstance(v, float) and np.isnan(v) else f"{v:.3f}" if isinstance(v, float) else str(v)

    return "\n".join([header, rule] + ["| " + " | ".join(cell(v) for v in row) + " |"
                                       for row in frame.itertuples(index=False)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="number of simulated worlds per design")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--no-rate", action="store_true", help="skip the held-out RATE per trial")
    parser.add_argument("--csv", default=None, help="also write every seed's row to this CSV")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows += _observational(seed) + _trial(seed, rate=not args.no_rate)
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print(f"Coverage of 95% intervals of the sample ATE over {args.seeds} seeds "
          f"({N_UNITS} units per world; {time.perf_counter() - start:.0f} s)\n")
    print(_markdown(summarise(frame)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
