"""Models: image encoders, the feature stage, causal estimators and their evaluation.

Two sides that never import each other: the image side (``encoders``, ``features``; torch)
and the effect side (``effects``; scikit-learn, econml), with ``evaluation`` (RATE,
calibration, plots) beside them. Public names load lazily (PEP 562): importing one estimator
does not import torch."""

from __future__ import annotations

from eocausal.lazy import lazy_exports

_EXPORTS = {
    "build_encoder": "encoders.registry",
    "register_encoder": "encoders.registry",
    "list_encoders": "encoders.registry",
    "RCF": "encoders.rcf",
    "SequenceEncoder": "encoders.sequence",
    "crossfit_finetune": "encoders.finetune",
    "TrainSettings": "encoders.finetune",
    "Augment": "encoders.augment",
    "encode_chips": "features.encode",
    "encode_store": "features.encode",
    "prepare_encoder": "features.encode",
    "read_features": "features.io",
    "write_features": "features.io",
    "encode_store_parts": "features.parts",
    "StoreBatches": "features.loader",
    "linear_probe": "features.probe",
    "probe_world": "features.probe",
    "estimate_effects": "effects.estimate",
    "EffectEstimates": "effects.estimate",
    "EffectModel": "effects.estimate",
    "KnownPropensity": "effects.propensity",
    "difference_in_means": "effects.checks",
    "CATE_METHODS": "effects.cate",
    "estimate_ate": "effects.ate",
    "AteReport": "effects.ate",
    "make_folds": "effects.crossfit",
    "spatial_blocks": "effects.crossfit",
    "check_overlap": "effects.diagnostics",
    "covariate_balance": "effects.diagnostics",
    "effective_sample_size": "effects.diagnostics",
    "join_features": "effects.inputs",
    "compare_with_truth": "evaluation.truth",
    "rank_average_treatment_effect": "evaluation.rate",
    "toc_curve": "evaluation.rate",
    "blp_test": "evaluation.calibration",
    "gates": "evaluation.calibration",
    "compare_methods": "evaluation.compare",
    "evaluate_heterogeneity": "evaluation.compare",
    "estimate_panel": "effects.panel",
    "PanelResult": "effects.panel",
    "PanelSettings": "effects.panel_settings",
    "encode_panel": "features.panel",
}

__getattr__, __dir__, __all__ = lazy_exports("eocausal.models", _EXPORTS)
