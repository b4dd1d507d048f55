"""Evaluate stage: held-out heterogeneity checks of the CATE model (RATE, BLP, GATES).

A CATE model always "finds" variation on the units it was fitted to, so priorities come
from the method refitted on the other folds (see ``models.evaluation.compare``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eocausal.workflows.context import StageContext
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.stages.estimate import (
    EstimationTable,
    json_ready,
    run_table,
    save_figures,
    write_json,
)

__all__ = ["EvaluationResult", "evaluate_settings", "evaluate_stage", "evaluate_table"]


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """The held-out evaluation as written to evaluation.json (``report`` is the object)."""

    summary: dict[str, Any]
    report: Any = None

    def record(self) -> dict[str, Any]:
        autoc = self.summary.get("rate_autoc") or {}
        return {"rate_autoc": autoc.get("estimate"), "method": self.summary.get("method")}

    def __repr__(self) -> str:
        a, q = self.summary["rate_autoc"], self.summary["rate_qini"]
        return (f"EvaluationResult(RATE AUTOC {a['estimate']:.3g} (se {a['se']:.2g}), "
                f"Qini {q['estimate']:.3g} (se {q['se']:.2g}))")


def evaluate_settings(config: Any) -> dict[str, Any]:
    return {**config.evaluation.model_dump(mode="json"), "budget": config.map.budget}


def _targeting(table: EstimationTable, report: Any, budget: float, seed: int) -> dict[str, Any]:
    """Where to go next: the value of treating the top ``budget`` places by held-out CATE,
    against random and treat-all, and a shallow policy tree on the covariates as a rule."""
    from eocausal.models.evaluation.targeting import (
        evaluate_targeting,
        fit_policy_tree,
        policy_rules,
    )

    result = evaluate_targeting(report.dr_scores, report.priorities, budget,
                                clusters=table.groups).summary()
    frame = table.frame
    if table.covariates and len(frame) >= 100:
        tree = fit_policy_tree(frame[table.covariates].to_numpy(float),
                               frame["treatment"].to_numpy(), frame["outcome"].to_numpy(float),
                               random_state=seed)
        result["rules"] = policy_rules(tree, list(table.covariates))
    return result


def _feature_sets(table: EstimationTable, settings: Any, n_bootstrap: int, seed: int
                  ) -> tuple[dict[str, Any], Any]:
    """Tabular-only, image-only and image+tabular models side by side (one table, one figure)."""
    from eocausal.models.evaluation.baselines import compare_feature_sets

    frame = table.frame
    comparison = compare_feature_sets(
        frame[table.features], frame[table.covariates], frame["treatment"].to_numpy(),
        frame["outcome"].to_numpy(float), method=settings.method, design=settings.design,
        propensity=settings.propensity, groups=table.groups, groups_name=table.groups_name,
        cv=settings.cv, n_components=settings.n_components, n_estimators=settings.n_estimators,
        min_samples_leaf=settings.min_samples_leaf, max_samples=settings.max_samples,
        trim=settings.trim, clip=settings.clip,
        n_bootstrap=n_bootstrap, random_state=seed)
    return comparison.summary(), comparison.figure()


def evaluate_table(table: EstimationTable, settings: Any, paths: RunPaths, *,
                   n_bootstrap: int = 200, seed: int = 0, echo: Any = None,
                   budget: float = 0.2, compare_sets: bool = True) -> EvaluationResult:
    """RATE (AUTOC, Qini), BLP and GATES from out-of-fold CATEs; writes evaluation.json and
    figures toc, qini, gates, calibration."""
    from eocausal.models.evaluation import plots
    from eocausal.models.evaluation.compare import evaluate_heterogeneity

    frame = table.frame
    if echo is not None:
        echo("evaluating held-out heterogeneity (RATE, BLP, GATES)")
    report = evaluate_heterogeneity(
        frame[table.features] if table.features else None, frame["treatment"].to_numpy(),
        frame["outcome"].to_numpy(float),
        covariates=frame[table.covariates] if table.covariates else None,
        method=settings.method, design=settings.design, propensity=settings.propensity,
        groups=table.groups, cv=settings.cv, n_components=settings.n_components,
        n_estimators=settings.n_estimators, min_samples_leaf=settings.min_samples_leaf,
        max_samples=settings.max_samples,
        n_bootstrap=n_bootstrap, random_state=seed, trim=settings.trim, clip=settings.clip,
        groups_name=table.groups_name)
    figures = {"toc": plots.plot_toc({"AUTOC": report.autoc}),
               "qini": plots.plot_toc({"Qini": report.qini})}
    if report.gates is not None:
        figures["gates"] = plots.plot_gates(report.gates)
        figures["calibration"] = plots.plot_calibration(report.gates)
    feature_sets = None
    if compare_sets and table.features and table.covariates:
        feature_sets, figures["feature_sets"] = _feature_sets(table, settings, n_bootstrap, seed)
    summary = {**report.summary(), "targeting": _targeting(table, report, budget, seed),
               "feature_sets": feature_sets, "figures": save_figures(figures, paths)}
    write_json(paths.evaluation, summary)
    if echo is not None:
        echo(f"RATE AUTOC {report.autoc.estimate:.4g} (se {report.autoc.se:.2g}), "
             f"Qini {report.qini.estimate:.4g} (se {report.qini.se:.2g})")
    return EvaluationResult(json_ready(summary), report)


def evaluate_stage(ctx: StageContext) -> EvaluationResult:
    return evaluate_table(run_table(ctx), ctx.config.estimator, ctx.paths,
                          n_bootstrap=ctx.config.evaluation.n_bootstrap, seed=ctx.config.seed,
                          echo=ctx.echo, budget=ctx.config.map.budget or 0.2,
                          compare_sets=ctx.config.evaluation.feature_sets)
