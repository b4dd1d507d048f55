"""The cluster model on the Uganda YOP trial (../shared/data/rct_geo), K = 2 and 3.

Run ``python -m benchmarks.uganda_clusters [--out DIR]``. Units with X3/X4 missing are
dropped (7); the images are ingested into a tile store with
``eocausal.pipeline.patches.ingest_patches``; folds are grouped by ``image_key`` (units of
one image never split across folds). Frozen features: per-band mean and standard deviation
of each patch (``tests.models.worlds.band_statistics``), covariates X1..X6. Prints the
cluster table with 95% intervals (the cross-fitted mu, and the full model's mu with its
sandwich), the implied ATE, and the held-out predictive log-likelihood per unit against a
one-cluster model; writes each K's outputs and, from a CNN trained end to end on the store's
chips (K = 2), the salience figures (``--skip-cnn``: the features model only).
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


def _model_mu(row) -> str:
    """The full model's mu with its sandwich interval (what the table reported before the
    cross-fitted mu)."""
    half = 1.959964 * row.mu_model_sd
    return f"{row.mu_model:.3f} [{row.mu_model - half:.3f}, {row.mu_model + half:.3f}]"


def cnn_spread(encoders: tuple[str, ...] = ("own", "shared")) -> None:
    """One CNN (K=2) on every unit per cluster encoder: how much p(cluster 2) varies
    between image keys, and the mu's with their sandwich sd."""
    from eocausal.models.heterogeneity.fit import fit_model, make_inputs

    units = pd.read_csv(DATA / "rct_geo" / "causalimages_uganda_units.csv")
    units = units.dropna(subset=COVARIATES).reset_index(drop=True)
    npz = np.load(DATA / "rct_geo" / "causalimages_uganda_images.npz")
    imgs = np.moveaxis(npz["images"], -1, 1).astype(np.float32)
    imgs = (imgs - imgs.mean(axis=(0, 2, 3), keepdims=True)) / imgs.std(axis=(0, 2, 3), keepdims=True)
    pos = {k: i for i, k in enumerate(npz["keys"])}
    chips = imgs[[pos[k] for k in units["image_key"]]][:, None]
    inputs = make_inputs(units["row"].astype(str), chips, units["W"], units["Y"],
                         covariates=units[COVARIATES].to_numpy(float), groups=units["image_key"])
    for enc in encoders:
        m = fit_model(inputs, ClustersSettings(k=2, encoder="cnn", epochs=40, hidden=16,
                                               cluster_encoder=enc))
        p = pd.Series(m.draws(chips, n_draws=50).probs.mean(0)[:, 1])
        per_image = p.groupby(units["image_key"].to_numpy()).mean()
        q = np.quantile(per_image, [0.05, 0.5, 0.95])
        print(f"{enc} encoder: p_cluster_2 over images sd {per_image.std():.3f}, 5/50/95% "
              f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}; mu {m.posterior.value('mu_loc') * m.y_sd} "
              f"sd {m.posterior.sd('mu_loc') * m.y_sd}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="uganda_clusters_")))
    parser.add_argument("--cnn-epochs", type=int, default=40)
    parser.add_argument("--skip-cnn", action="store_true", help="Only the features model.")
    parser.add_argument("--skip-features", action="store_true", help="Only the CNN model.")
    parser.add_argument("--cnn-spread", action="store_true",
                        help="Only the one-model CNN diagnostic (own and shared encoders).")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.cnn_spread:
        cnn_spread()
        return
    geo, features, store = load(args.out)
    common = {"id_column": "unit_id", "treatment": "W", "outcome": "Y", "covariates": COVARIATES,
              "group_column": "image_key"}
    inputs = load_inputs(geo, features=features, **common)
    print(f"{len(inputs.unit_ids)} units, {len(np.unique(inputs.groups))} image keys; "
          f"difference in means {inputs.outcome[inputs.treatment == 1].mean() - inputs.outcome[inputs.treatment == 0].mean():.3f}")
    print("| K | cluster | mu | 95% interval | full model's mu [sandwich 95%] | sigma | share | "
          "implied ATE [95%] | held-out loglik/unit | one-cluster loglik/unit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in () if args.skip_features else (2, 3):
        r = fit_clusters(inputs, ClustersSettings(k=k))
        for row in r.clusters.itertuples():
            print(f"| {k} | {row.cluster} | {row.mu:.3f} | [{row.mu_lo:.3f}, {row.mu_hi:.3f}] | "
                  f"{_model_mu(row)} | {row.sigma:.3f} | {row.share:.2f} | "
                  f"{r.ate:.3f} [{r.ate_lo:.3f}, {r.ate_hi:.3f}] | "
                  f"{r.heldout_loglik:.4f} | {r.heldout_loglik_one_cluster:.4f} |", flush=True)
        spread(r, f"features K={k}")
        write_cluster_outputs(r, args.out / f"features_k{k}", geometry=geo)
    if args.skip_cnn:
        return
    cnn_inputs = load_inputs(geo, store=store, **common)
    r = fit_clusters(cnn_inputs, ClustersSettings(k=2, encoder="cnn", epochs=args.cnn_epochs,
                                                  hidden=16), compare_one_cluster=True)
    for row in r.clusters.itertuples():
        print(f"| 2 (cnn) | {row.cluster} | {row.mu:.3f} | [{row.mu_lo:.3f}, {row.mu_hi:.3f}] | "
              f"{_model_mu(row)} | {row.sigma:.3f} | {row.share:.2f} | "
              f"{r.ate:.3f} [{r.ate_lo:.3f}, {r.ate_hi:.3f}] | "
              f"{r.heldout_loglik:.4f} | {r.heldout_loglik_one_cluster:.4f} |", flush=True)
    spread(r, "cnn")
    written = write_cluster_outputs(r, args.out / "cnn_k2", geometry=geo)
    print("figures:", *[str(p) for n, p in written.items() if n.startswith("salience")], sep="\n  ")


if __name__ == "__main__":
    main()
