"""Figures of the effect evaluation: TOC/Qini curves, GATES, calibration and overlap.

Each function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``, so no
global figure state or interactive backend is touched: a batch run saves it with
``fig.savefig(path)`` (Agg canvas) and a notebook displays it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from eocausal.models.evaluation.calibration import GatesResult
from eocausal.models.evaluation.rate import RateResult
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_calibration", "plot_feature_sets", "plot_gates", "plot_overlap",
           "plot_sensitivity_contour", "plot_toc"]

_Z95 = 1.959964


def _axes(ax: Axes | None, size: tuple[float, float] = (5.0, 3.6)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def plot_toc(rates: RateResult | Mapping[str, RateResult], *, ax: Axes | None = None) -> Figure:
    """TOC curve(s) with 95% bands: the gain of treating the top ``q`` over treating all.

    A curve well above zero at small ``q`` means the priorities find units that gain more;
    the RATE (AUTOC or Qini) in the legend is its weighted area.
    """
    fig, ax = _axes(ax)
    items = rates.items() if isinstance(rates, Mapping) else [("priorities", rates)]
    for label, rate in items:
        toc = rate.toc
        line = ax.plot(toc["q"], toc["estimate"], marker="o", ms=3,
                       label=f"{label}: {rate.target} {rate.estimate:.3g} ({rate.se:.2g})")[0]
        ax.fill_between(toc["q"], toc["estimate"] - _Z95 * toc["se"], toc["estimate"] + _Z95 * toc["se"],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("treated fraction q (highest priority first)")
    ax.set_ylabel("TOC(q): effect in top q minus ATE")
    ax.legend(fontsize="small")
    return fig


def plot_gates(result: GatesResult, *, ax: Axes | None = None) -> Figure:
    """Group effects by quantile of predicted CATE, with 95% intervals and the ATE line."""
    fig, ax = _axes(ax)
    table = result.table
    ax.errorbar(table["group"], table["estimate"], yerr=_Z95 * table["se"], fmt="o", capsize=3,
                label="GATES (AIPW)")
    ax.plot(table["group"], table["cate_mean"], "x", color="black", label="mean predicted CATE")
    weights = table["n"] / table["n"].sum()
    ax.axhline(float(np.sum(weights * table["estimate"])), color="grey", linestyle="--", label="ATE")
    ax.set_xlabel("group of predicted CATE (1 = lowest)")
    ax.set_ylabel("average effect")
    ax.set_xticks(table["group"])
    ax.legend(fontsize="small")
    return fig


def plot_calibration(result: GatesResult, *, ax: Axes | None = None) -> Figure:
    """Predicted against estimated group effects; points on the diagonal are calibrated."""
    fig, ax = _axes(ax, (4.2, 4.0))
    table = result.table
    ax.errorbar(table["cate_mean"], table["estimate"], yerr=_Z95 * table["se"], fmt="o", capsize=3)
    lo = float(min(table["cate_mean"].min(), (table["estimate"] - _Z95 * table["se"]).min()))
    hi = float(max(table["cate_mean"].max(), (table["estimate"] + _Z95 * table["se"]).max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect calibration")
    ax.set_xlabel("mean predicted CATE in group")
    ax.set_ylabel("estimated group effect (AIPW)")
    ax.legend(fontsize="small")
    return fig


def plot_overlap(summary: Mapping[str, Any], *, ax: Axes | None = None) -> Figure:
    """Propensity histograms of both arms, from :func:`models.diagnostics.overlap_summary`."""
    fig, ax = _axes(ax)
    edges = np.asarray(summary["hist_edges"])
    width = np.diff(edges)
    for key, label, colour in (("hist_control", "control", "tab:blue"), ("hist_treated", "treated", "tab:orange")):
        counts = np.asarray(summary[key], dtype=float)
        ax.bar(edges[:-1], counts / max(counts.sum(), 1.0), width=width, align="edge", alpha=0.5,
               color=colour, label=f"{label} (ESS {summary['ess_' + label]:.0f})")
    for x in (0.05, 0.95):
        ax.axvline(x, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("estimated propensity")
    ax.set_ylabel("share of arm")
    ax.legend(fontsize="small")
    return fig


def plot_feature_sets(table: Any) -> Figure:
    """ATE, AUTOC and Qini with 95% intervals for each feature set (rows of ``table``).

    ``table`` is :attr:`models.evaluation.baselines.FeatureSetComparison.table`: index the
    feature set, columns ``ate``/``ate_se``, ``autoc``/``autoc_se``, ``qini``/``qini_se``.
    """
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    names = [str(i) for i in table.index]
    ypos = np.arange(len(names))
    for k, (col, title) in enumerate((("ate", "ATE"), ("autoc", "RATE (AUTOC)"), ("qini", "RATE (Qini)"))):
        ax = fig.add_subplot(1, 3, k + 1)
        est = table[col].to_numpy(dtype=float)
        se = table[col + "_se"].to_numpy(dtype=float)
        ax.errorbar(est, ypos, xerr=_Z95 * se, fmt="o", color="tab:blue", capsize=3)
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yticks(ypos, names if k == 0 else [""] * len(names))
        ax.set_title(title, fontsize="medium")
        ax.invert_yaxis()
    return fig


def plot_sensitivity_contour(c_values: Any, lower: Any, *, estimate: float | None = None,
                             robustness_value: float | None = None, ax: Axes | None = None) -> Figure:
    """Contours of the interval's lower end over hidden-confounder strengths ``(c_t, c_y)``.

    ``c_values``, ``lower`` from :func:`models.effects.sensitivity.sensitivity_grid`; the
    thick red line is where the interval first reaches zero; the diagonal point marks the
    robustness value (equal strength in outcome and treatment).
    """
    fig, ax = _axes(ax, (5.0, 4.2))
    c = np.asarray(c_values, dtype=float)
    Z = np.asarray(lower, dtype=float)
    cs = ax.contour(c, c, Z, levels=10, colors="tab:blue", linewidths=0.8)
    ax.clabel(cs, fontsize="x-small", fmt="%.3g")
    if np.nanmin(Z) < 0 < np.nanmax(Z):
        ax.contour(c, c, Z, levels=[0.0], colors="tab:red", linewidths=2.0)
    if robustness_value is not None and 0 < robustness_value <= c.max():
        ax.plot([robustness_value], [robustness_value], "o", color="tab:red",
                label=f"robustness value {robustness_value:.3f}")
        ax.legend(fontsize="small", loc="upper right")
    ax.set_xlabel("confounding of treatment, c_t")
    ax.set_ylabel("confounding of outcome, c_y")
    title = "lower end of the 95% interval"
    ax.set_title(title if estimate is None else f"{title} (estimate {estimate:.4g})", fontsize="medium")
    return fig


def save_figures(figures: Mapping[str, Figure], folder: Any, *, dpi: int = 120) -> Sequence[Any]:
    """Write figures as ``<name>.png`` into ``folder`` (created) and return the paths."""
    from pathlib import Path

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
