"""eocausal: treatment effects from satellite imagery.

``import eocausal`` gives the notebook API; names load lazily (PEP 562), so importing the
package costs nothing until a stage is used.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "read_units": ("eocausal.pipeline.units", "read_units"),
    "open_store": ("eocausal.pipeline.store", "open_store"),
    "load_config": ("eocausal.workflows.config", "load_config"),
    "RunConfig": ("eocausal.workflows.config", "RunConfig"),
    "EocausalError": ("eocausal.errors", "EocausalError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eocausal' has no attribute '{name}'")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return __all__
