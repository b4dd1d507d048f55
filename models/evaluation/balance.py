"""The covariate balance figure: standardised mean differences before and after weighting.

A reader checks balance before trusting a weighted estimate: every column's |SMD| should fall
under 0.1 after weighting (the dotted line). Beside :mod:`plots` because it reads a balance
table (``models.effects.diagnostics.covariate_balance``) rather than an evaluation result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_balance"]


def plot_balance(balance: pd.DataFrame, *, max_rows: int = 30) -> Figure:
    """|SMD| per column before (grey) and after weighting (blue), largest first.

    Only the ``max_rows`` most imbalanced columns are drawn, so 500 features stay legible.
    """
    before = balance["smd_before"].abs()
    after = balance["smd_after"].abs()
    order = before.sort_values(ascending=False).index[:max_rows]
    rows = np.arange(len(order))
    fig = Figure(figsize=(5.0, max(2.0, 0.22 * len(order) + 1.0)))
    ax = fig.subplots()
    ax.scatter(before[order], rows, color="grey", label="before weighting", s=14)
    if after.notna().any():
        ax.scatter(after[order], rows, color="tab:blue", label="after weighting", s=14)
    ax.axvline(0.1, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yticks(rows, [str(c) for c in order], fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("|standardised mean difference|")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig
