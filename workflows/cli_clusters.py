"""``eocausal clusters``: the image-cluster heterogeneity model on units and a tile store.

A thin shell over :mod:`eocausal.models.heterogeneity`: it reads the units table (as
``eocausal estimate`` does), joins it with the store's chips (``cnn`` encoder) or a features
table (``features`` encoder), fits the cross-fitted cluster model and writes
``clusters.json``, ``effects.gpkg`` and ``figures/``. A user's mistake raises an
:class:`~eocausal.errors.EocausalError` that ``workflows.cli.main`` prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import click
from eocausal.models.heterogeneity.settings import ClustersSettings, check_clusters_settings
from eocausal.workflows import cli_estimate

__all__ = ["clusters"]

_DEFAULTS = ClustersSettings()


def _parse_k(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"must be an integer >= 2 or 'auto'; got {value!r}.") from None


def _geometry(units, store_path: Path | None, ids):  # type: ignore[no-untyped-def]
    """Unit geometry for effects.gpkg: the units' own, else the store's chip centres."""
    import geopandas as gpd

    if isinstance(units, gpd.GeoDataFrame) and units.crs is not None:
        return units
    if store_path is None:
        return None
    from eocausal.pipeline.store import open_store

    store = open_store(store_path)
    xy = store.centres
    return gpd.GeoDataFrame({"unit_id": store.unit_ids},
                            geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=store.crs)


@click.command("clusters")
@click.option("--units", "units_path", type=click.Path(path_type=Path), required=True,
              help="Units table (CSV, Parquet, GeoPackage) with id, treatment, outcome.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Tile store of the units (chips for the cnn encoder, geometry).")
@click.option("--features", "features_path", type=click.Path(path_type=Path), default=None,
              help="Features table (features.parquet): frozen features instead of the chips.")
@click.option("-k", "k", default=str(_DEFAULTS.k), show_default=True,
              help="Number of clusters (>= 2) or 'auto'.")
@click.option("--k-range", nargs=2, type=int, default=_DEFAULTS.k_range, show_default=True,
              help="Smallest and largest K tried with -k auto.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write.")
@click.option("--id-column", default="unit_id", show_default=True, help="Id column of the units.")
@click.option("--features-id", default=None, help="Id column of the features (default: --id-column).")
@click.option("--treatment", "treatment_col", default="treatment", show_default=True)
@click.option("--outcome", "outcome_col", default="outcome", show_default=True)
@click.option("--covariates", default="", help="Comma-separated covariate columns of the units.")
@click.option("--group-column", default=None, help="Cluster column for grouped folds (image key).")
@click.option("--design", type=click.Choice(["rct", "observational"]), default=_DEFAULTS.design,
              show_default=True)
@click.option("--propensity", type=float, default=None, help="Known assignment probability (rct).")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True)
@click.option("--learning-rate", type=float, default=_DEFAULTS.learning_rate, show_default=True)
@click.option("--cv", type=int, default=_DEFAULTS.cv, show_default=True, help="Cross-fitting folds.")
@click.option("--device", default=_DEFAULTS.device, show_default=True, help="auto, cpu or cuda.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("--cluster-encoder", type=click.Choice(["auto", "shared", "own"]),
              default=_DEFAULTS.cluster_encoder, show_default=True,
              help="cnn: the cluster head's own encoder (auto) or the outcome head's.")
@click.option("--cluster-noise", type=float, default=_DEFAULTS.cluster_noise, show_default=True,
              help="Chance that a unit's cluster is any cluster (bounds a boundary error).")
@click.option("--noise-df", type=float, default=_DEFAULTS.noise_df,
              help="Student-t outcome noise with these degrees of freedom (default Gaussian).")
def clusters(units_path: Path, store_path: Path | None, features_path: Path | None, k: str,
             k_range: tuple[int, int], out: Path, id_column: str, features_id: str | None,
             treatment_col: str, outcome_col: str, covariates: str, group_column: str | None,
             design: str, propensity: float | None, epochs: int, batch_size: int,
             learning_rate: float, cv: int, device: str, seed: int, cluster_encoder: str,
             cluster_noise: float, noise_df: float | None) -> None:
    """Fit latent image clusters with their own effect distributions; write them to OUT.

    Writes clusters.json (K, per-cluster mu with 95% interval, sigma, share, implied ATE,
    the K-selection curve with -k auto), effects.gpkg (held-out p_cluster_1..K with 2.5/97.5%
    bounds, cluster, tau_mean, tau_lo, tau_hi per unit) and figures/ (effect density,
    K selection, salience of typical and uncertain images per cluster for the cnn encoder).
    """
    from eocausal.models.features.io import read_features
    from eocausal.models.heterogeneity.data import load_inputs
    from eocausal.models.heterogeneity.fit import fit_clusters
    from eocausal.models.heterogeneity.outputs import write_cluster_outputs

    from eocausal.errors import ConfigError

    if store_path is None and features_path is None:
        raise ConfigError("give --store STORE (chips, cnn encoder) or --features FILE "
                          "(frozen features); the cluster model needs images.")
    settings = check_clusters_settings(
        k=_parse_k(k), k_range=tuple(k_range), encoder="features" if features_path else "cnn",
        design=design, propensity=propensity, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, cv=cv, device=device, seed=seed,
        cluster_encoder=cluster_encoder, cluster_noise=cluster_noise, noise_df=noise_df)
    units = cli_estimate.read_table(units_path, "units")
    features = None
    if features_path is not None:
        features = (read_features(features_path)[0] if features_path.suffix == ".parquet"
                    else cli_estimate.read_table(features_path, "features"))
    cov = [c.strip() for c in covariates.split(",") if c.strip()]
    inputs = load_inputs(units, store=None if features is not None else store_path,
                         features=features, id_column=id_column, features_id=features_id,
                         treatment=treatment_col, outcome=outcome_col, covariates=cov,
                         group_column=group_column, units_name=str(units_path))
    click.echo(f"  {len(inputs.unit_ids)} units, encoder {settings.encoder}, k {settings.k}", err=True)
    result = fit_clusters(inputs, settings)
    geometry = _geometry(units.rename(columns={id_column: "unit_id"}), store_path, inputs.unit_ids)
    written = write_cluster_outputs(result, out, geometry=geometry)
    click.echo(f"K={result.k}  implied ATE {result.ate:.4g}  95% [{result.ate_lo:.4g}, "
               f"{result.ate_hi:.4g}]  held-out loglik {result.heldout_loglik:.4f} "
               f"(one cluster {result.heldout_loglik_one_cluster:.4f})")
    click.echo(result.clusters.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for path in written.values():
        click.echo(f"  {path}")
