"""eocausal: treatment effects from satellite imagery.

``import eocausal`` gives the notebook API; names load lazily (PEP 562), so importing the
package costs nothing until a stage is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EocausalError": "eocausal.errors",
    "read_units": "eocausal.pipeline.units",
    "ingest": "eocausal.pipeline.ingest",
    "open_store": "eocausal.pipeline.store",
    "simulate": "eocausal.simulator.simulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eocausal' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
