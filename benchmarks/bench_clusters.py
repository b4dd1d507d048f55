"""The image-cluster model on planted-cluster worlds, its K choice, and its training speed.

Run ``python -m benchmarks.bench_clusters --part recovery|auto|speed [--seeds 20]``; each
part prints a markdown table (``--jsonl FILE`` also appends one line per seed, so a long
run can be read while it goes). Worlds: ``tests.models.cluster_worlds.planted_world``,
2,000 units, 512-pixel scene, 32-pixel chips, ``n_clusters=3``, ``heterogeneity=2``,
``noise=0.5``, features = band means, deviations and edges of each chip window (26).
``--impure`` keeps the simulator's own effects (cluster effect + smooth term) instead of the
planted cluster effects alone (see cluster_worlds for why the default removes it).

- recovery: K fixed at the planted 3, cv=3: held-out adjusted Rand index against the
  planted clusters; whether each mu_k interval covers the true effect of its cluster (mean
  true CATE of its units; clusters matched by order of effect); whether the implied ATE
  interval covers the true ATE.
- auto: ``k="auto"`` over 2..4, cv=3: the chosen K, the held-out curve and the units held
  by each K's smallest cluster (``--n-clusters 2`` plants 2 clusters instead of 3).
- speed: one training epoch of the package's loop against a bare torch loop over the same
  network, loss, batch size and data (ratio = bare time / package time; >= 0.8 wanted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from eocausal.models.heterogeneity.fit import fit_clusters, make_inputs
from eocausal.models.heterogeneity.settings import ClustersSettings
from eocausal.models.heterogeneity.train import NetData, build_network, train_network
from sklearn.metrics import adjusted_rand_score

from tests.models.cluster_worlds import planted_world

N_CLUSTERS = 3
_Z95 = 1.959964


def _world(seed: int, impure: bool) -> tuple[dict, object]:
    w = planted_world(seed, n_units=2000, n_clusters=N_CLUSTERS, pure=not impure)
    inputs = make_inputs(w["unit_ids"], w["features"], w["treatment"], w["outcome"],
                         covariates=w["covariates"])
    return w, inputs


def recovery(seed: int, impure: bool) -> dict:
    w, inputs = _world(seed, impure)
    t0 = time.perf_counter()
    r = fit_clusters(inputs, ClustersSettings(k=N_CLUSTERS, seed=seed), compare_one_cluster=False)
    truth = np.sort(w["true_mu"])
    c = r.clusters
    covered = ((c["mu_lo"] <= truth) & (truth <= c["mu_hi"])).to_numpy()
    # the full model's mu with the heads' sandwich sd: the interval before cross-fitting
    model_covered = (np.abs(c["mu_model"] - truth) <= _Z95 * c["mu_model_sd"]).to_numpy()
    return {"seed": seed, "ari": adjusted_rand_score(w["cluster"], r.units["cluster"]),
            "mu": c["mu"].round(3).tolist(), "true_mu": truth.round(3).tolist(),
            "mu_sd": c["mu_sd"].round(4).tolist(), "mu_covered": covered.tolist(),
            "mu_model": c["mu_model"].round(3).tolist(),
            "mu_model_sd": c["mu_model_sd"].round(4).tolist(),
            "mu_model_covered": model_covered.tolist(),
            "ate": r.ate, "ate_lo": r.ate_lo, "ate_hi": r.ate_hi,
            "true_ate": w["ate"], "ate_covered": bool(r.ate_lo <= w["ate"] <= r.ate_hi),
            "heldout_loglik": r.heldout_loglik, "heldout_loglik_one": r.heldout_loglik_one_cluster,
            "seconds": time.perf_counter() - t0}


def auto(seed: int, impure: bool) -> dict:
    w, inputs = _world(seed, impure)
    t0 = time.perf_counter()
    r = fit_clusters(inputs, ClustersSettings(k="auto", k_range=(2, 4), seed=seed),
                     compare_one_cluster=False)
    return {"seed": seed, "chosen_k": r.k, "curve": r.selection["heldout_loglik"].round(4).tolist(),
            "smallest_cluster": r.selection["smallest_cluster_units"].round(1).tolist(),
            "best_loglik_k": int(r.selection.loc[r.selection["heldout_loglik"].idxmax(), "k"]),
            "ari": adjusted_rand_score(w["cluster"], r.units["cluster"]),
            "seconds": time.perf_counter() - t0}


def _bare_epoch(net, data: NetData, batch: int, optimiser, n_draws: int) -> None:
    x, cov, t, e, y = data.tensors(torch.device("cpu"))
    n = len(data)
    order = torch.randperm(n)
    for start in range(0, n - batch + 1, batch):
        rows = order[start:start + batch]
        loss = net.loss(x[rows], cov[rows], t[rows], e[rows], y[rows], n, n_draws)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def speed(repeats: int = 7) -> list[dict]:
    w, inputs = _world(0, False)
    s = ClustersSettings()
    x = (inputs.images - inputs.images.mean(0)) / inputs.images.std(0)
    y = (inputs.outcome - inputs.outcome.mean()) / inputs.outcome.std()
    data = NetData(x.astype(np.float32), inputs.covariates.astype(np.float32),
                   inputs.treatment.astype(np.float32), np.zeros(len(y), np.float32),
                   y.astype(np.float32))
    rows = []
    for batch in (64, 256):
        bare_times, ours = [], []
        for r in range(repeats):  # interleaved
            net = build_network(x.shape[1:], N_CLUSTERS, data.covariates.shape[1], seed=r)
            opt = torch.optim.Adam(net.parameters(), lr=s.learning_rate)
            t0 = time.perf_counter()
            _bare_epoch(net, data, batch, opt, s.n_draws)
            bare_times.append(time.perf_counter() - t0)
            net = build_network(x.shape[1:], N_CLUSTERS, data.covariates.shape[1], seed=r)
            t0 = time.perf_counter()
            train_network(net, data, epochs=1, batch_size=batch, learning_rate=s.learning_rate,
                          n_draws=s.n_draws, seed=r)
            ours.append(time.perf_counter() - t0)
        rows.append({"batch": batch, "bare_s": statistics.median(bare_times[1:]),
                     "ours_s": statistics.median(ours[1:])})
    return rows


def main(argv: list[str] | None = None) -> None:
    global N_CLUSTERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["recovery", "auto", "speed"], required=True)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--impure", action="store_true")
    parser.add_argument("--n-clusters", type=int, default=N_CLUSTERS,
                        help="Planted K of the world (3; 2 gives the extra auto row).")
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--summarise", default=None, help="Only print the tables of a --jsonl file.")
    args = parser.parse_args(argv)
    N_CLUSTERS = args.n_clusters
    torch.set_num_threads(1)
    if args.summarise:
        with open(args.summarise) as fh:
            by_seed = {r["seed"]: r for r in map(json.loads, fh)}  # reruns of a seed repeat it
        summarise(args.part, [by_seed[k] for k in sorted(by_seed)])
        return
    if args.part == "speed":
        print("| batch | bare torch loop s/epoch | train_network s/epoch | ratio |\n|---|---|---|---|")
        for row in speed():
            print(f"| {row['batch']} | {row['bare_s']:.3f} | {row['ours_s']:.3f} | "
                  f"{row['bare_s'] / row['ours_s']:.2f} |")
        return
    run = recovery if args.part == "recovery" else auto
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        res = run(seed, args.impure)
        results.append(res)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(res) + "\n")
        print(json.dumps(res), file=sys.stderr, flush=True)
    summarise(args.part, results)


def summarise(part: str, results: list[dict]) -> None:
    n = len(results)
    if part == "recovery":
        ari = np.array([r["ari"] for r in results])
        mu = np.array([r["mu_covered"] for r in results])
        ate = np.array([r["ate_covered"] for r in results])
        print("| seeds | held-out ARI median (min) | seeds with ARI >= 0.9 | mu_k intervals covering "
              "(all clusters of a seed) | mu_k intervals covering (of 3n) | implied ATE covers |")
        print("|---|---|---|---|---|---|")
        print(f"| {n} | {np.median(ari):.3f} ({ari.min():.3f}) | {(ari >= 0.9).sum()}/{n} | "
              f"{mu.all(1).sum()}/{n} | {mu.sum()}/{mu.size} | {ate.sum()}/{n} |")
        if "mu_model" in results[0]:
            width = 2 * _Z95 * np.array([r["mu_sd"] for r in results])
            mwidth = 2 * _Z95 * np.array([r["mu_model_sd"] for r in results])
            mcov = np.array([r["mu_model_covered"] for r in results])
            z = np.array([(np.array(r["mu"]) - r["true_mu"]) / r["mu_sd"] for r in results])
            zm = np.array([(np.array(r["mu_model"]) - r["true_mu"]) / r["mu_model_sd"]
                           for r in results])
            print(f"\n| mu interval | covering (of 3n) | median width | sd of (mu - truth) / sd |\n"
                  f"|---|---|---|---|\n"
                  f"| cross-fitted (reported) | {mu.sum()}/{mu.size} | {np.median(width):.3f} | "
                  f"{z.std():.2f} |\n"
                  f"| full model, sandwich | {mcov.sum()}/{mcov.size} | {np.median(mwidth):.3f} | "
                  f"{zm.std():.2f} |")
    else:
        ks = [r["chosen_k"] for r in results]
        print(f"| seeds | planted K | chosen K counts | picks planted K |\n|---|---|---|---|\n"
              f"| {n} | {N_CLUSTERS} | {dict(sorted(__import__('collections').Counter(ks).items()))} "
              f"| {ks.count(N_CLUSTERS)}/{n} |")
        if "best_loglik_k" in results[0]:
            best = [r["best_loglik_k"] for r in results]
            print(f"\nbest held-out log-likelihood alone: "
                  f"{dict(sorted(__import__('collections').Counter(best).items()))}")


if __name__ == "__main__":
    main()
