"""Every stage of a run, defined once: what it reads, what it writes, what it follows.

``eocausal run`` executes :data:`STAGES` (defined in :mod:`.registry`) as a DAG
(:mod:`eocausal.workflows.dag`); the per-stage commands (``eocausal ingest | encode |
estimate | map``) call the same stage functions of the modules beside this one.

The registry is imported on first use of ``STAGES``: it imports every stage module, and a
per-stage command such as ``eocausal ingest`` should pay only for its own (0.8 s of imports
measured on the ingest command's critical path).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STAGES", "STAGE_NAMES"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from eocausal.workflows.stages import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
