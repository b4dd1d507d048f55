"""Lazy package namespaces (PEP 562): a public name imports its module on first use.

Every package of eocausal exports its public names this way, so ``import eocausal`` or a
dask worker importing one ingestion module does not import torch, econml or the simulator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str | tuple[str, str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    ``exports`` maps a public name to the module that defines it, relative to ``package``
    (``"store"``), or to ``(absolute module, attribute)`` when the attribute's name differs.
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        target = exports[name]
        module, attribute = target if isinstance(target, tuple) else (f"{package}.{target}", name)
        return getattr(importlib.import_module(module), attribute)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
