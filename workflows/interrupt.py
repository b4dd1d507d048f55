"""Remember that Ctrl-C arrived, even when it surfaces as another exception.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives; inside
compiled code (scikit-learn's Cython, for one) it can surface as an unrelated error such as
"not a valid PEP 3118 buffer format string". The command line installs :func:`install`, and
the stage runner and the CLI ask :func:`was_interrupted` to report an interruption as one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["forget_caught_interrupt", "install", "restore", "was_interrupted"]

_EVENT = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    _EVENT.set()
    raise KeyboardInterrupt


def install() -> object:
    """Use the recording handler for SIGINT (main thread only; a no-op elsewhere); returns
    the handler it replaced, for :func:`restore`."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _handler)


def restore(previous: object) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def was_interrupted() -> bool:
    return _EVENT.is_set()


def forget_caught_interrupt() -> None:
    """Let a Ctrl-C that the command caught end the process with its own exit status.

    CPython (3.11, 3.12) marks a KeyboardInterrupt that ends any string ``exec``/``eval`` as
    unhandled, even when a caller catches it later, and under ``python -m`` the interpreter
    then kills itself with SIGINT at exit (status -2, not our 130). A stage is interrupted
    inside such an ``exec`` whenever Ctrl-C lands while a dataclass or namedtuple is being
    built by a lazy import. The mark is cleared at the start of every string evaluation, so
    one harmless evaluation clears it.
    """
    exec("None", {})  # noqa: S102 - a constant string, run only to reset the interpreter's mark
