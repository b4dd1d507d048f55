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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    return getattr(importlib.import_module(f"models.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
