"""Progress bars for long stages: drawn on a terminal, silent elsewhere (one echo line per
stage says what happened instead)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(desc: str, enabled: bool, unit: str = "chip"
                 ) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)`` for a library callback; the bar appears on first call."""
    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if not enabled:
            return
        if "bar" not in bar:
            from tqdm.auto import tqdm

            bar["bar"] = tqdm(total=total, desc=desc, unit=unit, leave=False)
        bar["bar"].update(done - bar["bar"].n)

    try:
        yield update
    finally:
        if "bar" in bar:
            bar["bar"].close()
