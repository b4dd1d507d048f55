"""Clusters stage: the image-cluster heterogeneity model on the run's units (config
``clusters`` section), its outputs in ``clusters/``, and its per-unit columns joined into the
run's effects.gpkg."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eocausal.workflows.context import StageContext
from eocausal.workflows.stages.estimate import write_effects

__all__ = ["clusters_outputs", "clusters_settings", "clusters_stage", "load_cluster_model",
           "save_cluster_model"]


def clusters_settings(config: Any) -> dict[str, Any]:
    return {"clusters": config.clusters.model_dump(mode="json"), "seed": config.seed,
            "covariates": list(config.units.covariates), "group": config.units.group}


def clusters_outputs(ctx: StageContext) -> list[Path]:
    p = ctx.paths
    return [p.clusters / "clusters.json", p.effects, p.cluster_model, p.cluster_model_sha256]


def save_cluster_model(model: Any, paths: Any) -> Path:
    """Write the fitted cluster model and its checksum, so the map can predict at new places.

    The model holds a torch network: it is pickled with ``torch.save``, and
    :func:`load_cluster_model` loads only the file whose checksum this stage recorded.
    """
    import torch
    from eocausal.workflows.stages.estimate import file_sha256

    paths.clusters.mkdir(parents=True, exist_ok=True)
    tmp = paths.cluster_model.with_name(f".{paths.cluster_model.name}.tmp")
    torch.save(model, tmp)
    digest = file_sha256(tmp)
    os.replace(tmp, paths.cluster_model)
    paths.cluster_model_sha256.write_text(digest + "\n")
    return paths.cluster_model


def load_cluster_model(paths: Any) -> Any | None:
    """The run's cluster model, or None when the run has none.

    Raises
    ------
    InputFileError
        If ``clusters/model.pt`` is not the file the clusters stage wrote (checksum).
    """
    from eocausal.errors import InputFileError

    if not paths.cluster_model.is_file():
        return None
    import torch
    from eocausal.workflows.stages.estimate import file_sha256

    expected = (paths.cluster_model_sha256.read_text().strip()
                if paths.cluster_model_sha256.is_file() else None)
    if not expected or file_sha256(paths.cluster_model) != expected:
        raise InputFileError(
            f"Refusing to load '{paths.cluster_model}': it is not the model this run's clusters "
            f"stage wrote (checksum differs from {paths.cluster_model_sha256.name}). Rerun the "
            "clusters stage (eocausal run ... --force clusters).")
    return torch.load(paths.cluster_model, map_location="cpu", weights_only=False)


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
    save_cluster_model(result.model, paths)
    effects = gpd.read_file(paths.effects)
    per_unit = gpd.read_file(paths.clusters / "effects.gpkg").drop(columns="geometry")
    keep = [c for c in effects.columns if not c.startswith(("p_cluster_", "tau_"))
            and c != "cluster"]
    effects = effects[keep].merge(per_unit, on="unit_id", how="left")
    write_effects(gpd.GeoDataFrame(effects, geometry="geometry", crs=units.crs), paths.effects)
    ctx.echo(f"{result.k} image clusters: implied ATE {result.ate:.4g} (95% CI "
             f"{result.ate_lo:.4g} to {result.ate_hi:.4g})")
    return {"k": int(result.k), "ate": float(result.ate)}
