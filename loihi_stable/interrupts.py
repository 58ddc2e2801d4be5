"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be; inside a weakref callback
or a ``__del__`` (garbage collection, at any moment) it is printed as "Exception ignored" and
dropped, and the command would go on, finish and write its outputs. So the handler also records
the interrupt, and the points that must not go on after one (every progress update, hence every
training step and attack batch, and every atomic write) check the record.
"""
from __future__ import annotations

import signal
import sys
import threading

_received = False


def _on_sigint(signum, frame):
    global _received
    _received = True
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable, default=sys.unraisablehook):
    """A swallowed Ctrl-C is recorded, not printed as 'Exception ignored ... Traceback'."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        default(unraisable)


def install() -> None:
    """Take over SIGINT for this command (main thread only; a no-op elsewhere or where SIGINT is ignored)."""
    global _received
    _received = False
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _quiet_unraisable


def check() -> None:
    """Raise KeyboardInterrupt again if one was received, even if something swallowed it."""
    if _received:
        raise KeyboardInterrupt
