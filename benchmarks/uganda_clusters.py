"""The cluster model on the Uganda YOP trial (../shared/data/rct_geo), K = 2 and 3.

Run ``python -m benchmarks.uganda_clusters [--out DIR]``. Units with X3/X4 missing are
dropped (7); the images are ingested into a tile store with
``eocausal.pipeline.patches.ingest_patches``; folds are grouped by ``image_key`` (units of
one image never split across folds). Frozen features: per-band mean and standard deviation
of each patch (``tests.models.worlds.band_statistics``), covariates X1..X6. Prints the
cluster table with 95% intervals, the implied ATE, and the held-out predictive
log-likelihood per unit against a one-cluster model; writes each K's outputs and, from a CNN
trained end to end on the store's chips (K = 2), the salience figures.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from eocausal.models.heterogeneity.data import load_inputs
from eocausal.models.heterogeneity.fit import fit_clusters
from eocausal.models.heterogeneity.outputs import write_cluster_outputs
from eocausal.models.heterogeneity.settings import ClustersSettings
from eocausal.pipeline.patches import ingest_patches

from tests.conftest import DATA
from tests.models.worlds import band_statistics

COVARIATES = ["X1", "X2", "X3", "X4", "X5", "X6"]


def load(store_dir: Path) -> tuple[gpd.GeoDataFrame, pd.DataFrame, Path]:
    units = pd.read_csv(DATA / "rct_geo" / "causalimages_uganda_units.csv")
    units = units.dropna(subset=COVARIATES).reset_index(drop=True)
    units["unit_id"] = "u" + units["row"].astype(str)
    geo = gpd.GeoDataFrame(units, geometry=gpd.points_from_xy(units.geo_long, units.geo_lat),
                           crs="EPSG:4326")
    npz = DATA / "rct_geo" / "causalimages_uganda_images.npz"
    store = store_dir / "uganda.zarr"
    ingest_patches(geo, npz, store, key_column="image_key")
    images = np.load(npz)
    stats = band_statistics(np.moveaxis(images["images"], -1, 1)) / 255.0
    per_key = pd.DataFrame(stats, columns=[f"band{i}" for i in range(stats.shape[1])])
    per_key["image_key"] = images["keys"]
    features = units[["unit_id", "image_key"]].merge(per_key, on="image_key").drop(columns="image_key")
    return geo, features, store


def spread(result, name: str) -> None:
    """How much the held-out cluster probabilities vary between images: one value for every
    image means the encoder learned no image dependence."""
    p = result.units[f"p_cluster_{result.k}"].to_numpy()
    q = np.quantile(p, [0.05, 0.5, 0.95])
    print(f"{name}: held-out p_cluster_{result.k} over units: sd {p.std():.3f}, 5/50/95% "
          f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="uganda_clusters_")))
    parser.add_argument("--cnn-epochs", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    geo, features, store = load(args.out)
    common = {"id_column": "unit_id", "treatment": "W", "outcome": "Y", "covariates": COVARIATES,
              "group_column": "image_key"}
    inputs = load_inputs(geo, features=features, **common)
    print(f"{len(inputs.unit_ids)} units, {len(np.unique(inputs.groups))} image keys; "
          f"difference in means {inputs.outcome[inputs.treatment == 1].mean() - inputs.outcome[inputs.treatment == 0].mean():.3f}")
    print("| K | cluster | mu | 95% interval | sigma | share | implied ATE [95%] | held-out loglik/unit | one-cluster loglik/unit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in (2, 3):
        r = fit_clusters(inputs, ClustersSettings(k=k))
        for row in r.clusters.itertuples():
            print(f"| {k} | {row.cluster} | {row.mu:.3f} | [{row.mu_lo:.3f}, {row.mu_hi:.3f}] | "
                  f"{row.sigma:.3f} | {row.share:.2f} | {r.ate:.3f} [{r.ate_lo:.3f}, {r.ate_hi:.3f}] | "
                  f"{r.heldout_loglik:.4f} | {r.heldout_loglik_one_cluster:.4f} |", flush=True)
        spread(r, f"features K={k}")
        write_cluster_outputs(r, args.out / f"features_k{k}", geometry=geo)
    cnn_inputs = load_inputs(geo, store=store, **common)
    r = fit_clusters(cnn_inputs, ClustersSettings(k=2, encoder="cnn", epochs=args.cnn_epochs,
                                                  hidden=16), compare_one_cluster=True)
    for row in r.clusters.itertuples():
        print(f"| 2 (cnn) | {row.cluster} | {row.mu:.3f} | [{row.mu_lo:.3f}, {row.mu_hi:.3f}] | "
              f"{row.sigma:.3f} | {row.share:.2f} | {r.ate:.3f} [{r.ate_lo:.3f}, {r.ate_hi:.3f}] | "
              f"{r.heldout_loglik:.4f} | {r.heldout_loglik_one_cluster:.4f} |", flush=True)
    spread(r, "cnn")
    written = write_cluster_outputs(r, args.out / "cnn_k2", geometry=geo)
    print("figures:", *[str(p) for n, p in written.items() if n.startswith("salience")], sep="\n  ")


if __name__ == "__main__":
    main()
