"""eocausal: treatment effects from satellite imagery.

``import eocausal`` gives the notebook API; names load lazily (PEP 562), so importing the
package costs nothing until a stage is used.
"""

from __future__ import annotations

from eocausal.lazy import lazy_exports

_EXPORTS = {  # public name -> (module, attribute)
    "run": ("eocausal.workflows.api", "run"),
    "open_run": ("eocausal.workflows.api", "open_run"),
    "Run": ("eocausal.workflows.api", "Run"),
    "ingest": ("eocausal.workflows.api", "ingest"),
    "encode": ("eocausal.workflows.api", "encode"),
    "estimate": ("eocausal.workflows.api", "estimate"),
    "evaluate": ("eocausal.workflows.api", "evaluate"),
    "map": ("eocausal.workflows.api", "map_effects"),
    "simulate": ("eocausal.simulator.simulate", "simulate"),
    "simulate_panel": ("eocausal.simulator.panel", "simulate_panel"),
    "encode_panel": ("eocausal.models.features.panel", "encode_panel"),
    "join_panel": ("eocausal.models.effects.panel", "join_panel"),
    "estimate_panel": ("eocausal.models.effects.panel", "estimate_panel"),
    "read_units": ("eocausal.pipeline.units", "read_units"),
    "open_store": ("eocausal.pipeline.store", "open_store"),
    "load_config": ("eocausal.workflows.config", "load_config"),
    "RunConfig": ("eocausal.workflows.config", "RunConfig"),
    "EocausalError": ("eocausal.errors", "EocausalError"),
}

__getattr__, __dir__, __all__ = lazy_exports("eocausal", _EXPORTS)
