"""Write what the clusters stage produces: ``clusters.json``, ``effects.gpkg`` and figures.

Per unit (held-out): ``p_cluster_1..K`` with ``_lo``/``_hi`` (2.5/97.5%), ``cluster``,
``tau_mean``, ``tau_lo``, ``tau_hi``. Figures: the effect density of each cluster, the
K-selection curve (``k='auto'``), and for ``cnn`` models the salience of the most typical and
most uncertain images of each cluster (one panel per date for sequences).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.heterogeneity.fit import ClusterResult
from eocausal.models.heterogeneity.salience import cluster_salience, select_examples
from matplotlib.figure import Figure
from scipy import stats

from eocausal.files import json_ready

__all__ = ["plot_effect_density", "plot_salience", "plot_selection", "write_cluster_outputs"]


def plot_effect_density(result: ClusterResult) -> Figure:
    """Each cluster's effect distribution N(mu_k, sigma_k^2), scaled by its share, with the
    held-out per-unit effect means beneath and the implied ATE."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    c = result.clusters
    lo = float((c.mu - 4 * c.sigma).min())
    hi = float((c.mu + 4 * c.sigma).max())
    grid = np.linspace(lo, hi, 400)
    for row in c.itertuples():
        ax.plot(grid, row.share * stats.norm.pdf(grid, row.mu, max(row.sigma, 1e-6)),
                label=f"cluster {row.cluster}: mu {row.mu:.2f} [{row.mu_lo:.2f}, {row.mu_hi:.2f}]")
    ax.plot(result.units["tau_mean"], np.zeros(len(result.units)), "|", color="0.4", alpha=0.3)
    ax.axvline(result.ate, color="k", ls="--", lw=1, label=f"implied ATE {result.ate:.2f}")
    ax.set_xlabel("treatment effect")
    ax.set_ylabel("share x density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_selection(selection: pd.DataFrame) -> Figure:
    """Held-out predictive log-likelihood per unit against K, with +-1 standard error; a K
    with a cluster that holds too few units (not a candidate) is marked with a cross."""
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.errorbar(selection["k"], selection["heldout_loglik"], yerr=selection["se"], marker="o")
    if "candidate" in selection and not selection["candidate"].all():
        out = selection[~selection["candidate"].astype(bool)]
        ax.plot(out["k"], out["heldout_loglik"], "x", color="tab:red", ms=10,
                label="a cluster holds too few units")
        ax.legend(fontsize=7)
    ax.set_xlabel("K")
    ax.set_ylabel("held-out log-likelihood per unit")
    fig.tight_layout()
    return fig


def _rgb(chip: np.ndarray) -> np.ndarray:
    """A display image (H, W, 3 or 1) of one date's normalised bands (C, H, W)."""
    bands = chip[:3] if chip.shape[0] >= 3 else chip[:1]
    img = np.moveaxis(bands, 0, -1)
    lo, hi = np.percentile(img, [2, 98])
    img = np.clip((img - lo) / (hi - lo or 1.0), 0, 1)
    return img if img.shape[-1] == 3 else img[..., 0]


def plot_salience(chips: np.ndarray, salience: np.ndarray, titles: list[str],
                  dates: tuple[str | None, ...] = ()) -> Figure:
    """Rows of units; per date an image panel and its salience (band-summed, signed)."""
    n, t = chips.shape[:2]
    fig = Figure(figsize=(2.2 * 2 * t, 2.2 * n))
    axes = fig.subplots(n, 2 * t, squeeze=False)
    for i in range(n):
        for d in range(t):
            sal = salience[i, d].sum(0)
            lim = float(np.abs(sal).max()) or 1.0
            axes[i, 2 * d].imshow(_rgb(chips[i, d]), cmap="gray")
            axes[i, 2 * d + 1].imshow(sal, cmap="RdBu_r", vmin=-lim, vmax=lim)
            date = dates[d] if d < len(dates) and dates[d] else f"date {d + 1}"
            axes[i, 2 * d].set_title(f"{titles[i]}\n{date}" if t > 1 else titles[i], fontsize=7)
            axes[i, 2 * d + 1].set_title("salience", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def write_cluster_outputs(result: ClusterResult, out_dir: str | Path, *,
                          geometry: Any = None, n_examples: int = 4) -> dict[str, Path]:
    """Write ``clusters.json``, ``effects.gpkg`` and PNG figures into ``out_dir``.

    Parameters
    ----------
    result : ClusterResult
    out_dir : path
        Created if missing; files replaced.
    geometry : GeoDataFrame, optional
        Units with ``unit_id`` and geometry; ``effects.gpkg`` gets their geometry (rows in
        the result's order). Without it the GeoPackage is an attribute table.
    n_examples : int, default=4
        Typical and uncertain images drawn per cluster in the salience figures.

    Returns
    -------
    written : dict of name -> path
    """
    import geopandas as gpd
    import pyogrio

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    path = out / "clusters.json"
    path.write_text(json.dumps(json_ready(result.summary()), indent=2, allow_nan=False) + "\n")
    written["clusters"] = path
    effects = result.units
    path = out / "effects.gpkg"
    path.unlink(missing_ok=True)
    if geometry is not None:
        geo = geometry[["unit_id", geometry.geometry.name]].assign(
            unit_id=geometry["unit_id"].astype(str))
        frame = gpd.GeoDataFrame(effects.merge(geo, on="unit_id", how="left"),
                                 geometry=geometry.geometry.name, crs=geometry.crs)
        frame.to_file(path, layer="effects", driver="GPKG", engine="pyogrio")
    else:
        pyogrio.write_dataframe(effects, path, layer="effects", driver="GPKG")
    written["effects"] = path
    figures = {"effect_density": plot_effect_density(result)}
    if result.selection is not None:
        figures["k_selection"] = plot_selection(result.selection)
    if result.model.encoder == "cnn":
        for k in range(1, result.k + 1):
            picks = select_examples(effects, k, n_examples, result.inputs.images)
            for kind, rows in picks.items():
                if rows.size == 0:
                    continue
                chips = result.inputs.images[rows]
                sal = cluster_salience(result.model, chips, k, seed=k)
                titles = [f"{effects['unit_id'].iloc[r]} p={effects[f'p_cluster_{k}'].iloc[r]:.2f}"
                          for r in rows]
                figures[f"salience_cluster{k}_{kind}"] = plot_salience(
                    chips, sal, titles, result.inputs.dates)
    for name, fig in figures.items():
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=110)
        written[name] = path
    return written
