"""Overhead of ``estimate_effects`` against calling econml's CausalForestDML directly.

Run ``python -m benchmarks.bench_estimators`` (overhead at 2,000 units) or
``python -m benchmarks.bench_estimators scale [--methods ...] [--sizes 1000,10000,100000]``
(time and peak memory of every CATE method at growing sizes, wrapper and direct econml, one
fresh process per fit). Both sides fit the same forest (same nuisance
models, folds, trees, seed, OpenMP limit) on the same data in the same process and then
compute what the wrapper returns: per-unit effects, their intervals and the ATE with its
standard error. The wrapper adds input checks, standardisation (and PCA when asked), the
difference in means and the result object. Runs are interleaved after one warm-up; the
ratio wrapper / direct of the fastest runs is the overhead (target: within 5%): noise from
other processes only adds time, so the minimum is the steadiest estimate; medians of wall
and process CPU time are shown too. On a shared machine even those move by 10%, so the last
column times, inside each wrapper run, everything that is not an econml call (fit, effect,
intervals, ATE): the overhead itself, free of run-to-run noise. A second
row lets the wrapper reduce 256 features with PCA while the direct call gets the reduced
matrix for free, so its ratio also counts the PCA. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
from eocausal.models.effects.estimate import estimate_effects
from eocausal.models.effects.propensity import KnownPropensity
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


def simulate(n_units: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trial: effect 1 + x0 + 0.5 x1, baseline 2 x2 + x3^2; wide features mix 10 factors."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_units, 10))
    features = x
    if n_features != 10:  # plus a little noise, so PCA's components are well defined
        features = x @ rng.normal(size=(10, n_features)) + 0.1 * rng.normal(size=(n_units, n_features))
    t = rng.binomial(1, 0.5, n_units)
    y = 2 * x[:, 2] + x[:, 3] ** 2 + t * (1 + x[:, 0] + 0.5 * x[:, 1]) + rng.normal(size=n_units)
    return features, t, y


def direct(X: np.ndarray, t: np.ndarray, y: np.ndarray, *, n_estimators: int, cv: int) -> float:
    """econml alone: the forest the wrapper builds, fitted and queried the same way."""
    from econml.dml import CausalForestDML

    model_y = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=300, min_samples_leaf=20,
                                            early_stopping=True, validation_fraction=0.15,
                                            n_iter_no_change=20, random_state=0)
    est = CausalForestDML(model_y=model_y, model_t=KnownPropensity(0.5), discrete_treatment=True,
                          cv=cv, n_estimators=n_estimators, min_samples_leaf=5, n_jobs=-1, random_state=0)
    with threadpool_limits(1, user_api="openmp"):
        est.fit(y, t, X=X)
    est.effect(X)
    est.effect_interval(X, alpha=0.05)
    return float(np.ravel(est.ate_)[0])


def wrapper(features: np.ndarray, t: np.ndarray, y: np.ndarray, *, n_estimators: int, cv: int,
            n_components: int | None) -> float:
    """The project's entry point with the same settings."""
    fit = estimate_effects(features, t, y, propensity=0.5, n_components=n_components,
                           n_estimators=n_estimators, cv=cv, n_jobs=-1, random_state=0)
    return fit.ate


class _EconmlClock:
    """Accumulates the time the wrapper spends inside models.cate's econml calls."""

    names = ("fit_cate", "predict_cate", "cate_ate")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> _EconmlClock:
        from eocausal.models.effects import cate

        self._saved = {n: getattr(cate, n) for n in self.names}
        for name, func in self._saved.items():
            setattr(cate, name, self._timed(func))
        return self

    def _timed(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed

    def __exit__(self, *exc: object) -> None:
        from eocausal.models.effects import cate

        for name, func in self._saved.items():
            setattr(cate, name, func)


def _time(func: Callable[[], float]) -> tuple[float, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = func()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def bench(n_units: int, n_features: int, n_components: int | None, *, repeats: int,
          n_estimators: int, cv: int) -> dict[str, float | int | str]:
    features, t, y = simulate(n_units, n_features)
    scaled = StandardScaler().fit_transform(features)
    pca = None if n_components is None else PCA(n_components, random_state=0).fit(scaled)
    X = scaled if pca is None else pca.transform(scaled)  # as the wrapper (not fit_transform)
    run_direct = lambda: direct(X, t, y, n_estimators=n_estimators, cv=cv)  # noqa: E731
    run_wrapper = lambda: wrapper(features, t, y, n_estimators=n_estimators, cv=cv,  # noqa: E731
                                  n_components=n_components)
    run_direct(), run_wrapper()  # warm-up: imports, thread pools
    times: dict[str, list[tuple[float, float]]] = {"direct": [], "wrapper": []}
    ates: dict[str, float] = {}
    for _ in range(repeats):
        for name, func in (("direct", run_direct), ("wrapper", run_wrapper)):
            wall, cpu, ates[name] = _time(func)
            times[name].append((wall, cpu))
    outside = []
    for _ in range(3):
        with _EconmlClock() as clock:
            total, _, _ = _time(run_wrapper)
        outside.append((total - clock.seconds, total))
    outside_s, outside_total = min(outside)
    med = {k: [statistics.median(v[i] for v in times[k]) for i in (0, 1)] for k in times}
    best = {k: min(v[0] for v in times[k]) for k in times}
    return {"units": n_units, "features": n_features,
            "pca": "none" if n_components is None else str(n_components),
            "direct_s": best["direct"], "wrapper_s": best["wrapper"],
            "ratio": best["wrapper"] / best["direct"],
            "median_ratio": med["wrapper"][0] / med["direct"][0],
            "cpu_ratio": med["wrapper"][1] / med["direct"][1],
            "ate_diff": abs(ates["direct"] - ates["wrapper"]),
            "outside_s": outside_s, "outside_share": outside_s / outside_total}


def direct_estimator(method: str, *, n_estimators: int, cv: int, propensity: float = 0.5) -> Any:
    """econml's estimator for ``method``, built here as a user would (same nuisances)."""
    from econml.dml import CausalForestDML, LinearDML
    from econml.dr import ForestDRLearner, LinearDRLearner
    from econml.metalearners import SLearner, TLearner, XLearner

    model_y = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=300, min_samples_leaf=20,
                                            early_stopping=True, validation_fraction=0.15,
                                            n_iter_no_change=20, random_state=0)
    model_t = KnownPropensity(propensity)
    forest = {"n_estimators": n_estimators, "min_samples_leaf": 5, "n_jobs": -1, "random_state": 0}
    return {
        "causal_forest": lambda: CausalForestDML(model_y=model_y, model_t=model_t,
                                                 discrete_treatment=True, cv=cv, **forest),
        "linear_dml": lambda: LinearDML(model_y=model_y, model_t=model_t, discrete_treatment=True,
                                        cv=cv, random_state=0),
        "dr_learner": lambda: LinearDRLearner(model_regression=model_y, model_propensity=model_t,
                                              min_propensity=1e-3, cv=cv, random_state=0),
        "forest_dr_learner": lambda: ForestDRLearner(model_regression=model_y,
                                                     model_propensity=model_t,
                                                     min_propensity=1e-3, cv=cv, **forest),
        "t_learner": lambda: TLearner(models=model_y),
        "s_learner": lambda: SLearner(overall_model=model_y),
        "x_learner": lambda: XLearner(models=model_y, propensity_model=model_t),
    }[method]()


SCALE_RUN = """
import json, sys, time
sys.path.insert(0, ROOT)
from benchmarks.bench_estimators import direct_estimator, simulate
import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
side, method, n, trees, cv, comps = sys.argv[1:7]
n, trees, cv, comps = int(n), int(trees), int(cv), int(comps)
features, t, y = simulate(n, 256)
import econml.dml, econml.dr, econml.metalearners  # imports are not what is measured
from eocausal.models.effects.estimate import estimate_effects
def peak():  # VmHWM, not ru_maxrss: Linux carries that over from the parent across exec
    return [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
base = peak()
start = time.perf_counter()
if side == "wrapper":
    fit = estimate_effects(features, t, y, propensity=0.5, method=method, n_components=comps,
                           n_estimators=trees, cv=cv, n_jobs=-1, random_state=0)
    ate = fit.ate
else:
    X = PCA(comps, random_state=0).fit(StandardScaler().fit_transform(features)).transform(
        StandardScaler().fit_transform(features))
    start = time.perf_counter()  # the direct call gets the reduced matrix for free
    est = direct_estimator(method, n_estimators=trees, cv=cv)
    with threadpool_limits(1, user_api="openmp"):
        est.fit(y, t, X=X)
        ate = float(np.mean(est.effect(X)))
        if method in ("causal_forest", "linear_dml", "dr_learner", "forest_dr_learner"):
            est.effect_interval(X, alpha=0.05)  # the wrapper returns per-unit intervals too
print(json.dumps({"seconds": time.perf_counter() - start, "ate": float(ate), "base_mb": base,
                  "peak_mb": peak()}))
"""


def scale_run(side: str, method: str, n: int, *, trees: int, cv: int, components: int,
              timeout: float) -> dict[str, Any]:
    """One fit in a fresh process (so peak memory is its own); None fields on a timeout."""
    import subprocess
    from pathlib import Path

    code = SCALE_RUN.replace("ROOT", repr(str(Path(__file__).resolve().parents[1])))
    try:
        proc = subprocess.run([sys.executable, "-c", code, side, method, str(n), str(trees),
                               str(cv), str(components)], capture_output=True, text=True,
                              timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "peak_mb": None, "base_mb": None, "ate": None}
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale(argv: list[str]) -> int:
    """Time and peak memory of each CATE method at growing sizes, wrapper and direct econml."""
    parser = argparse.ArgumentParser(description="CATE methods at scale")
    parser.add_argument("--methods", default="causal_forest,linear_dml,dr_learner,"
                        "forest_dr_learner,t_learner,s_learner,x_learner")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--n-estimators", type=int, default=400)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--sides", default="wrapper,direct")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    print(f"{args.n_estimators} trees, cv={args.cv}, 256 features -> PCA {args.components}; "
          "one fresh process per fit; seconds: fit + per-unit effects (+ intervals and ATE in "
          "the wrapper); memory: peak RSS minus RSS after the data were made\n")
    print("| method | units | direct econml (s) | wrapper (s) | wrapper / direct | direct peak "
          "(MB) | wrapper peak (MB) |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for n in map(int, args.sizes.split(",")):
            res = {side: scale_run(side, method, n, trees=args.n_estimators, cv=args.cv,
                                   components=args.components, timeout=args.timeout)
                   if side in args.sides.split(",") else {"seconds": None, "peak_mb": None}
                   for side in ("direct", "wrapper")}

            def fmt(value: float | None, spec: str = ".1f") -> str:
                return "-" if value is None else format(value, spec)

            d, w = res["direct"], res["wrapper"]
            ratio = (w["seconds"] / d["seconds"]) if d["seconds"] and w["seconds"] else None
            grow = {k: (v["peak_mb"] - v["base_mb"]) if v.get("peak_mb") else None
                    for k, v in res.items()}
            print(f"| {method} | {n:,} | {fmt(d['seconds'])} | {fmt(w['seconds'])} | "
                  f"{fmt(ratio, '.2f')} | {fmt(grow['direct'], '.0f')} | "
                  f"{fmt(grow['wrapper'], '.0f')} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:
        return scale(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-estimators", type=int, default=400)
    parser.add_argument("--cv", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [bench(args.units, 10, None, repeats=args.repeats, n_estimators=args.n_estimators, cv=args.cv),
            bench(args.units, 256, 20, repeats=args.repeats, n_estimators=args.n_estimators, cv=args.cv)]
    print(f"CausalForestDML, {args.n_estimators} trees, cv={args.cv}, {args.repeats} interleaved "
          f"runs each; econml {version('econml')}, scikit-learn {version('scikit-learn')}, "
          f"Python {platform.python_version()}\n")
    print("| units | features | PCA | econml direct, best (s) | estimate_effects, best (s) | ratio "
          "(best) | ratio (median wall) | ratio (median CPU) | ATE difference | wrapper time outside "
          "econml |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['units']} | {r['features']} | {r['pca']} | {r['direct_s']:.2f} | "
              f"{r['wrapper_s']:.2f} | {r['ratio']:.3f} | {r['median_ratio']:.3f} | "
              f"{r['cpu_ratio']:.3f} | {r['ate_diff']:.1e} | {r['outside_s']:.3f} s "
              f"({r['outside_share']:.1%}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
