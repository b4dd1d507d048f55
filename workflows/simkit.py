"""The simulation kit: a power and design check before a trial, by simulating the study.

Jerzak, Johansson and Daoud ("Integrating Earth Observation Data into Causal Inference")
show by simulation that adjusting for a confounder through images degrades with coarser
pixels and with a confounder the pixels show less well. :func:`run_grid` runs that check
for a planned study: a grid over pixel size (the same world's scenes block-averaged from
10 m to 160 m), confounder visibility (1 = the confounder is the landscape the pixels show,
0 = a trait no pixel shows), sample size and design, with several seeds per cell. Every
study simulates a world (:func:`eocausal.simulator.make_world`), cuts each unit's chip,
encodes it (RCF), and estimates the ATE by IPW, AIPW and DML
(:func:`~eocausal.models.effects.ate.estimate_ate`) and the causal forest
(:func:`~eocausal.models.effects.estimate.estimate_effects`). :func:`summarise_grid` gives per
cell and estimator the share of the naive bias removed, interval coverage and RMSE, each
with a 95% interval over seeds; :func:`plot_grid` draws them. Each study is one task of
:func:`~eocausal.workflows.cluster.partition_mapper`, so ``scheduler=ADDRESS`` runs the grid
on a dask cluster; a study's numbers depend only on its spec, never on where it ran.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.effects.ate import estimate_ate
from eocausal.models.effects.diagnostics import OverlapWarning
from eocausal.models.effects.estimate import estimate_effects
from eocausal.models.encoders.registry import build_encoder
from eocausal.models.features.encode import encode_chips
from eocausal.simulator.visibility import confounded_outcomes, degrade_scene
from eocausal.simulator.world import WorldSpec, make_world
from eocausal.workflows.cluster import partition_mapper
from sklearn.decomposition import PCA

from eocausal.errors import ConfigError

__all__ = ["KIT_METHODS", "StudySpec", "markdown_table", "plot_grid", "run_grid", "run_study",
           "simulation_grid", "summarise_grid"]

log = logging.getLogger(__name__)

KIT_METHODS = ("ipw", "aipw", "linear_dml", "causal_forest")
BASE_PIXEL = 10.0
GRID_KEYS = ["design", "n_units", "visibility", "pixel_size"]


@dataclass(frozen=True)
class StudySpec:
    """One simulated study: a cell of the grid and a seed.

    ``pixel_size`` must be ``BASE_PIXEL`` (10 m) times a power of two that divides
    ``scene_size``; ``chip_size`` is in 10 m pixels (80 m by default).
    """

    pixel_size: float = 10.0
    visibility: float = 1.0
    n_units: int = 1000
    design: str = "observational"
    seed: int = 0
    confounding: float = 1.5
    scene_size: int = 256
    chip_size: int = 8
    n_bands: int = 4
    n_features: int = 64
    n_components: int = 10
    n_estimators: int = 100

    def __post_init__(self) -> None:
        factor = self.pixel_size / BASE_PIXEL
        if not (factor >= 1 and float(factor).is_integer()
                and self.scene_size % int(factor) == 0):
            raise ConfigError(f"StudySpec.pixel_size must be {BASE_PIXEL:g} m times a whole "
                              f"factor that divides scene_size={self.scene_size} (10, 20, 40, "
                              f"80, 160). Got {self.pixel_size!r} instead.")
        if not 0.0 <= self.visibility <= 1.0:
            raise ConfigError(f"StudySpec.visibility must be in [0, 1] (1: the pixels show the "
                              f"confounder). Got {self.visibility!r} instead.")
        if self.design not in ("observational", "rct"):
            raise ConfigError(f"StudySpec.design must be 'observational' or 'rct'. Got "
                              f"{self.design!r} instead.")


def simulation_grid(
    *, pixel_sizes: Sequence[float] = (10, 20, 40, 80, 160),
    visibilities: Sequence[float] = (1.0, 0.5, 0.0), n_units: Sequence[int] = (1000,),
    designs: Sequence[str] = ("observational",), seeds: Iterable[int] = range(10),
    **fixed: Any,
) -> list[StudySpec]:
    """Every combination of the axes, one :class:`StudySpec` per seed (``fixed``: the rest)."""
    seeds = list(seeds)
    return [StudySpec(pixel_size=float(p), visibility=float(v), n_units=int(n), design=d,
                      seed=int(s), **fixed)
            for d, n, v, p, s in itertools.product(designs, n_units, visibilities, pixel_sizes,
                                                   seeds)]


def _chips(scene: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """(N, C, size, size) windows centred on the units' pixels."""
    half = size // 2
    return np.stack([scene[:, r - half:r - half + size, c - half:c - half + size]
                     for r, c in zip(rows, cols, strict=True)])


def run_study(spec: StudySpec) -> list[dict[str, Any]]:
    """Simulate, encode and estimate one study; one row per estimator (and the naive one)."""
    world = make_world(WorldSpec(n_units=spec.n_units, scene_size=spec.scene_size,
                                 chip_size=spec.chip_size, n_bands=spec.n_bands,
                                 design="rct", seed=spec.seed))
    study = confounded_outcomes(world, visibility=spec.visibility,
                                confounding=spec.confounding if spec.design == "observational"
                                else 0.0, seed=spec.seed)
    scene = degrade_scene(world.scenes[0], int(spec.pixel_size / BASE_PIXEL))
    rows, cols = world.units["row"].to_numpy(), world.units["col"].to_numpy()
    chips = _chips(scene, rows, cols, spec.chip_size)
    encoder = build_encoder("rcf", spec.n_bands, n_features=spec.n_features, seed=0)
    mean, std = chips.mean(axis=(0, 2, 3)), chips.std(axis=(0, 2, 3))
    feats = encode_chips(chips, encoder, mean=mean, std=std, device="cpu")
    X = PCA(spec.n_components, random_state=spec.seed).fit_transform(feats)
    X = np.column_stack([X, study["x1"].to_numpy()])
    t, y = study["treatment"].to_numpy(), study["outcome"].to_numpy()
    truth = float(study["cate"].mean())
    design = spec.design
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        report = estimate_ate(X, t, y, design=design, cv=5, random_state=spec.seed,
                              methods=["difference_in_means", "ipw", "aipw", "linear_dml"])
        forest = estimate_effects(X[:, :-1], t, y, covariates=X[:, -1:], design=design,
                                  n_components=None, n_estimators=spec.n_estimators, n_jobs=1,
                                  random_state=spec.seed)
    found = {m: (e.estimate, e.se, e.lo, e.hi) for m, e in report.estimates.items()}
    found["causal_forest"] = (forest.ate, forest.ate_se, forest.ate_lo, forest.ate_hi)
    naive = found.pop("difference_in_means")[0]
    base = {**{k: getattr(spec, k) for k in GRID_KEYS}, "seed": spec.seed, "truth": truth,
            "naive": naive}
    return [{**base, "method": m, "estimate": e, "se": se, "lo": lo, "hi": hi}
            for m, (e, se, lo, hi) in found.items()]


def run_grid(specs: Sequence[StudySpec], *, scheduler: str | None = "synchronous",
             workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Run every study (each one task) and return one row per study and estimator.

    Parameters
    ----------
    specs : sequence of StudySpec
        From :func:`simulation_grid`.
    scheduler : str, default="synchronous"
        As :func:`~eocausal.workflows.cluster.partition_mapper`: ``"synchronous"`` in this
        process, ``None``/``"processes"`` worker processes of this machine, ``"local"`` a
        dask LocalCluster, anything else a dask scheduler address.
    workers : int, optional
        Worker processes (default: one per core).
    """
    if not specs:
        raise ConfigError("the simulation grid is empty; give at least one value per axis "
                          "and one seed.")
    with partition_mapper(scheduler, workers, desc="studies", progress=progress) as mapper:
        results = mapper(run_study, list(specs))
    return pd.DataFrame([row for rows in results for row in rows])


def _mean_ci(values: pd.Series) -> tuple[float, float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    half = 1.959964 * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else math.nan
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def summarise_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """Per cell and estimator: bias removed, coverage and RMSE, with 95% intervals over seeds.

    ``bias_removed`` is ``1 - |estimate - truth| / |naive - truth|`` per study (1: all of
    the difference in means' bias removed, 0: none; NaN in a trial, where the naive
    contrast has no bias to remove). Coverage's interval is Wilson's.
    """
    rows = rows.assign(error=rows["estimate"] - rows["truth"],
                       covers=(rows["lo"] <= rows["truth"]) & (rows["truth"] <= rows["hi"]))
    naive_bias = (rows["naive"] - rows["truth"]).abs()
    removed = 1 - rows["error"].abs() / naive_bias
    rows["bias_removed"] = removed.where(rows["design"] == "observational")
    out = []
    for key, cell in rows.groupby([*GRID_KEYS, "method"], sort=False):
        s = len(cell)
        br, br_lo, br_hi = _mean_ci(cell["bias_removed"])
        p = float(cell["covers"].mean())
        centre, spread = (p + 1.92 / s) / (1 + 3.84 / s), (
            1.96 * math.sqrt(p * (1 - p) / s + 0.96 / s**2) / (1 + 3.84 / s))
        sq = (cell["error"] ** 2).to_numpy()
        rmse = math.sqrt(sq.mean())
        rmse_half = 1.96 * sq.std(ddof=1) / math.sqrt(s) / (2 * rmse) if s > 1 and rmse else math.nan
        out.append(dict(zip([*GRID_KEYS, "method"], key, strict=True), n_seeds=s,
                        bias_removed=br, bias_removed_lo=br_lo, bias_removed_hi=br_hi,
                        coverage=p, coverage_lo=centre - spread, coverage_hi=centre + spread,
                        rmse=rmse, rmse_lo=rmse - rmse_half, rmse_hi=rmse + rmse_half))
    return pd.DataFrame(out)


def plot_grid(summary: pd.DataFrame, path: str | Path | None = None) -> Any:
    """Bias removed (with its interval) against pixel size, a panel per visibility."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    obs = summary[summary["design"] == "observational"]
    cells = obs.drop_duplicates(["n_units", "visibility"])[["n_units", "visibility"]]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(4.2 * max(len(cells), 1), 3.6),
                             sharey=True, squeeze=False)
    for ax, (_, cell) in zip(axes[0], cells.iterrows(), strict=False):
        part = obs[(obs["n_units"] == cell["n_units"]) & (obs["visibility"] == cell["visibility"])]
        for method, line in part.groupby("method", sort=False):
            line = line.sort_values("pixel_size")
            ax.errorbar(line["pixel_size"], line["bias_removed"],
                        yerr=[line["bias_removed"] - line["bias_removed_lo"],
                              line["bias_removed_hi"] - line["bias_removed"]],
                        marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(part["pixel_size"].unique()))
        ax.set_xticklabels([f"{p:g}" for p in sorted(part["pixel_size"].unique())])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"visibility {cell['visibility']:g}, n={int(cell['n_units'])}")
        ax.set_xlabel("pixel size (m)")
    axes[0][0].set_ylabel("share of naive bias removed")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A markdown table without the optional ``tabulate`` dependency."""
    frame = table.reset_index() if table.index.name else table

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)

