"""Sensitivity of the ATE to a confounder that the images and covariates miss.

Chernozhukov, Cinelli, Newey, Sharma and Syrgkanis ("Long story short: omitted variable bias
in causal machine learning", NBER WP 30302, 2022) bound the bias of a doubly robust or DML
estimate by ``|bias| <= rho * sqrt(c_y) * sqrt(c_t / (1 - c_t)) * sqrt(sigma^2 nu^2)``: ``c_y``
is the share of the outcome's residual variance a hidden confounder would explain, ``c_t``
the share of the variation in the Riesz representer (for a binary treatment, how much the
confounder would move the inverse-propensity weights), ``sigma^2`` and ``nu^2`` what the data
give. econml 0.17 implements the bounds in ``econml.validate.sensitivity_analysis`` (and as
``sensitivity_interval``/``robustness_value`` methods of its DML and DR learners); this module
feeds it our cross-fitted nuisances or the learner's residuals, so every observational
estimate gets the same bounds, a robustness value and a sentence for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SensitivityResult", "dml_sensitivity_params", "dr_sensitivity_params",
           "sensitivity_bounds", "sensitivity_grid", "sensitivity_result"]


@dataclass(frozen=True, eq=False)
class SensitivityResult:
    """Omitted-variable-bias bounds of one estimate at confounding strength ``(c_y, c_t)``.

    ``theta_lo``/``theta_hi``: the bounds on the estimand; ``lo``/``hi``: the same widened by
    sampling error (``1 - alpha``); ``robustness_value``: the strength ``c_y = c_t`` at which
    the ``1 - alpha`` interval first reaches ``null``; ``robustness_value_theta``: the same
    for the point estimate; ``params``: econml's ``SensitivityParams`` (theta, sigma, nu, cov).
    """

    estimate: float
    lo: float
    hi: float
    theta_lo: float
    theta_hi: float
    c_y: float
    c_t: float
    rho: float
    alpha: float
    null: float
    robustness_value: float
    robustness_value_theta: float
    estimand: str
    params: Any

    def sentence(self) -> str:
        """One sentence for the report."""
        rv, rvt = self.robustness_value, self.robustness_value_theta
        if rv <= 0:
            head = (f"The {self.estimand} interval already includes {self.null:g}, so no hidden "
                    "confounding is needed to make it insignificant")
        else:
            head = (f"A hidden confounder would have to explain {rv:.1%} of the residual variance of "
                    f"both the outcome and the treatment to bring the {self.estimand}'s "
                    f"{1 - self.alpha:.0%} interval to {self.null:g} ({rvt:.1%} to move the estimate "
                    f"itself there)")
        return (f"{head}; a confounder of strength {self.c_y:g} (outcome) and {self.c_t:g} "
                f"(treatment) would allow any value in [{self.lo:.4g}, {self.hi:.4g}] "
                f"(estimate {self.estimate:.4g}).")

    def summary(self) -> dict[str, Any]:
        """Plain values for ``summary.json``."""
        return {"estimate": self.estimate, "lo": self.lo, "hi": self.hi, "theta_lo": self.theta_lo,
                "theta_hi": self.theta_hi, "c_y": self.c_y, "c_t": self.c_t, "rho": self.rho,
                "alpha": self.alpha, "null": self.null, "robustness_value": self.robustness_value,
                "robustness_value_theta": self.robustness_value_theta, "estimand": self.estimand,
                "sentence": self.sentence()}


def dml_sensitivity_params(t_res: ArrayLike, y_res: ArrayLike) -> Any:
    """econml's sensitivity parameters of a partialling-out DML fit from its residuals."""
    from econml.validate.sensitivity_analysis import dml_sensitivity_values

    return dml_sensitivity_values(np.asarray(t_res, dtype=float), np.asarray(y_res, dtype=float))


def dr_sensitivity_params(treatment: ArrayLike, outcome: ArrayLike, mu0: ArrayLike, mu1: ArrayLike,
                          propensity: ArrayLike) -> Any:
    """econml's sensitivity parameters of the AIPW ATE from cross-fitted nuisances.

    econml's ``dr_sensitivity_values`` takes the doubly robust corrected predictions of its
    DRLearner; they are rebuilt here from ``mu0``, ``mu1`` and ``e`` so that it recovers them.
    """
    from econml.validate.sensitivity_analysis import dr_sensitivity_values

    t = np.asarray(treatment, dtype=float)
    y = np.asarray(outcome, dtype=float)
    e = np.asarray(propensity, dtype=float)
    t_pred = np.column_stack([1 - e, e])
    mu = np.column_stack([np.asarray(mu0, dtype=float), np.asarray(mu1, dtype=float)])
    arms = np.column_stack([1 - t, t])
    npp = arms / t_pred
    y_pred = mu + npp * (y[:, None] - mu)
    p = dr_sensitivity_values(y, t.reshape(-1, 1), y_pred, t_pred)
    return type(p)(theta=float(p.theta[0]), sigma=float(p.sigma[0]), nu=float(p.nu[0]), cov=p.cov[0])


def sensitivity_result(params: Any, *, estimand: str = "ATE", alpha: float = 0.05, c_y: float = 0.05,
                       c_t: float = 0.05, rho: float = 1.0, null: float = 0.0) -> SensitivityResult:
    """Bounds and robustness values from econml's sensitivity parameters."""
    from econml.validate.sensitivity_analysis import RV, sensitivity_interval

    kw = dict(params._asdict())
    kw = {k: (float(np.ravel(v)[0]) if k != "cov" else np.asarray(v).reshape(3, 3)) for k, v in kw.items()}
    lo, hi = sensitivity_interval(**kw, alpha=alpha, c_y=c_y, c_t=c_t, rho=rho, interval_type="ci")
    tlo, thi = sensitivity_interval(**kw, alpha=alpha, c_y=c_y, c_t=c_t, rho=rho, interval_type="theta")
    rv = RV(**kw, alpha=alpha, null_hypothesis=null, interval_type="ci")
    rvt = RV(**kw, alpha=alpha, null_hypothesis=null, interval_type="theta")
    return SensitivityResult(
        estimate=float(kw["theta"]), lo=float(lo), hi=float(hi), theta_lo=float(tlo),
        theta_hi=float(thi), c_y=c_y, c_t=c_t, rho=rho, alpha=alpha, null=null,
        robustness_value=float(rv), robustness_value_theta=float(rvt), estimand=estimand,
        params=type(params)(**kw))


C_GRID = tuple(np.round(np.linspace(0.0, 0.3, 31), 10))


def sensitivity_grid(params: Any, c_values: ArrayLike = C_GRID, *,
                     alpha: float = 0.05, rho: float = 1.0, bound: str = "lower"
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The ``1 - alpha`` interval's lower (or upper) end over a grid of ``(c_t, c_y)``, for contours.

    Returns the grid and a matrix ``Z[i, j]`` at ``c_y = c[i]``, ``c_t = c[j]``.
    """
    from econml.validate.sensitivity_analysis import sensitivity_interval

    c = np.asarray(c_values, dtype=float)
    kw = {k: (float(np.ravel(v)[0]) if k != "cov" else np.asarray(v).reshape(3, 3))
          for k, v in params._asdict().items()}
    Z = np.empty((c.size, c.size))
    for i, cy in enumerate(c):
        for j, ct in enumerate(c):
            lo, hi = sensitivity_interval(**kw, alpha=alpha, c_y=cy, c_t=ct, rho=rho, interval_type="ci")
            Z[i, j] = lo if bound == "lower" else hi
    return c, Z


def sensitivity_bounds(est: Any, method: str) -> dict[str, Any] | None:
    """The bounds of a fitted learner of :mod:`models.effects.cate` (JSON-ready), or None.

    DML learners (causal forest, LinearDML) bound their partialling-out effect, which weights
    units by ``e (1 - e)``; the DR learners bound their ATE. Metalearners have none. Where
    econml cannot compute them (a negative ``nu`` from badly calibrated propensities) the
    dict says ``available: False`` with econml's reason instead of failing the fit.
    """
    if method in ("causal_forest", "linear_dml"):
        try:
            y_res, t_res, _, _ = est.residuals_
        except AttributeError:
            return None
        params = dml_sensitivity_params(np.ravel(t_res), np.ravel(y_res))
        estimand = "overlap-weighted (partialling-out) effect"
    elif method in ("dr_learner", "forest_dr_learner"):
        try:
            lo, hi = est.sensitivity_interval(T=1)
            rv = est.robustness_value(T=1)
        except ValueError as exc:  # econml: negative nu from poorly calibrated propensities
            return {"estimand": "ATE", "available": False, "reason": str(exc)}
        return {"estimand": "ATE", "available": True, "lo": float(lo), "hi": float(hi),
                "c_y": 0.05, "c_t": 0.05, "robustness_value": float(rv)}
    else:
        return None
    try:
        return {"available": True, **sensitivity_result(params, estimand=estimand).summary()}
    except ValueError as exc:
        return {"estimand": estimand, "available": False, "reason": str(exc)}
