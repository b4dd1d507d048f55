"""Image-cluster heterogeneity model: latent image clusters with their own effect distributions.

Names load lazily, so ``eocausal.models.heterogeneity.settings`` (read with the run config)
costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ClusterInputs", "ClusterModel", "ClusterResult", "ClustersSettings", "HeadPosterior",
           "augmented_ate", "check_clusters_settings", "cluster_effects_aipw",
           "cluster_salience", "fit_clusters",
           "fit_model", "head_posterior", "load_inputs", "make_inputs", "predict_places",
           "select_k", "write_cluster_outputs"]

_HOME = {"ClusterInputs": "fit", "ClusterModel": "fit", "ClusterResult": "fit",
         "fit_clusters": "fit", "fit_model": "fit", "make_inputs": "fit",
         "cluster_effects_aipw": "debias", "select_k": "select",
         "HeadPosterior": "laplace", "head_posterior": "laplace", "augmented_ate": "ate", "ClustersSettings": "settings",
         "check_clusters_settings": "settings", "cluster_salience": "salience",
         "load_inputs": "data", "predict_places": "predict",
         "write_cluster_outputs": "outputs"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOME[name]}")
    return getattr(module, name)
