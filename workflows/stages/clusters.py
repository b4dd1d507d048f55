"""Clusters stage: the image-cluster heterogeneity model on the run's units (config
``clusters`` section), its outputs in ``clusters/``, and its per-unit columns joined into the
run's effects.gpkg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eocausal.workflows.context import StageContext
from eocausal.workflows.stages.estimate import write_effects

__all__ = ["clusters_outputs", "clusters_settings", "clusters_stage"]


def clusters_settings(config: Any) -> dict[str, Any]:
    return {"clusters": config.clusters.model_dump(mode="json"), "seed": config.seed,
            "covariates": list(config.units.covariates), "group": config.units.group}


def clusters_outputs(ctx: StageContext) -> list[Path]:
    return [ctx.paths.clusters / "clusters.json", ctx.paths.effects]


def clusters_stage(ctx: StageContext) -> dict[str, Any]:
    """Fit the cluster model (frozen features, or a CNN on the chips) and write its outputs."""
    import geopandas as gpd
    from eocausal.models.features.io import read_features
    from eocausal.models.heterogeneity.data import load_inputs
    from eocausal.models.heterogeneity.fit import fit_clusters
    from eocausal.models.heterogeneity.outputs import write_cluster_outputs

    config, paths = ctx.config, ctx.paths
    settings = config.clusters
    units = ctx.units()
    features = None if settings.encoder == "cnn" else read_features(paths.features)[0]
    inputs = load_inputs(units, store=paths.tiles if features is None else None,
                         features=features, id_column="unit_id",
                         covariates=list(config.units.covariates),
                         group_column="group" if "group" in units else None,
                         units_name=str(config.units.path))
    result = fit_clusters(inputs, settings)
    write_cluster_outputs(result, paths.clusters, geometry=units[["unit_id", "geometry"]])
    effects = gpd.read_file(paths.effects)
    per_unit = gpd.read_file(paths.clusters / "effects.gpkg").drop(columns="geometry")
    keep = [c for c in effects.columns if not c.startswith(("p_cluster_", "tau_"))
            and c != "cluster"]
    effects = effects[keep].merge(per_unit, on="unit_id", how="left")
    write_effects(gpd.GeoDataFrame(effects, geometry="geometry", crs=units.crs), paths.effects)
    ctx.echo(f"{result.k} image clusters: implied ATE {result.ate:.4g} (95% CI "
             f"{result.ate_lo:.4g} to {result.ate_hi:.4g})")
    return {"k": int(result.k), "ate": float(result.ate)}
