"""Models: image encoders, the feature stage, causal estimators and their evaluation.

Public names are loaded lazily (PEP 562): importing one estimator does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_encoder": "encoders", "register_encoder": "encoders", "list_encoders": "encoders",
    "RCF": "rcf",
    "encode_chips": "features", "encode_store": "features", "prepare_encoder": "features",
    "read_features": "features", "write_features": "features",
    "estimate_effects": "estimate", "EffectEstimates": "estimate", "EffectModel": "estimate",
    "KnownPropensity": "propensity",
    "difference_in_means": "evaluate", "compare_with_truth": "evaluate",
    "SequenceEncoder": "sequence", "encode_store_parts": "parts", "StoreBatches": "loader",
    "crossfit_finetune": "finetune", "TrainSettings": "finetune", "Augment": "augment",
    "linear_probe": "probe", "probe_world": "probe",
    "CATE_METHODS": "cate", "estimate_ate": "ate", "AteReport": "ate",
    "make_folds": "crossfit", "spatial_blocks": "crossfit",
    "check_overlap": "diagnostics", "covariate_balance": "diagnostics",
    "effective_sample_size": "diagnostics",
    "rank_average_treatment_effect": "rate", "toc_curve": "rate",
    "blp_test": "calibration", "gates": "calibration",
    "compare_methods": "compare", "evaluate_heterogeneity": "compare",
    "join_features": "inputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    return getattr(importlib.import_module(f"models.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
