"""Ctrl-C that is never lost, and never turned into another error.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside a weakref callback
or a ``__del__`` it is printed as "Exception ignored" and dropped; inside a library it can leave
that library half-way through an update and come out as another exception (matplotlib drawing a
marker: ``ValueError: Invalid affine transformation matrix``). So the handler records the
interrupt; the points that must not go on after one (every progress update, every atomic write)
check the record; a command that fails after one reports the interrupt, not the failure; and the
steps no library survives being interrupted in (drawing a figure, writing HDF5, an epoch's files)
run under ``deferred()``, which holds the interrupt until the step is done.

Under torchrun, SIGTERM is how the launcher stops the other workers when one fails or is
interrupted: it is taken as the same kind of stop, so that the command ends with one line, not a
half-written file or a silent death.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

_received = False
_deferring = 0
_written: list[str] = []
_stopped_by_launcher = False


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that knows better than ``message()`` what the interrupted work left (e.g. ``--resume``)."""


def _on_sigint(signum, frame):
    global _received
    _received = True
    if not _deferring:
        raise KeyboardInterrupt


def _on_sigterm(signum, frame):
    global _stopped_by_launcher
    _stopped_by_launcher = True
    _on_sigint(signum, frame)


def _quiet_unraisable(unraisable, default=sys.unraisablehook):
    """A swallowed Ctrl-C is recorded, not printed as 'Exception ignored ... Traceback'."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        default(unraisable)


def install() -> None:
    """Take over SIGINT for this command (main thread only; a no-op elsewhere or where SIGINT is ignored)."""
    global _received, _deferring, _stopped_by_launcher
    _received, _deferring, _stopped_by_launcher = False, 0, False
    _written.clear()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _quiet_unraisable
        if "TORCHELASTIC_RUN_ID" in os.environ and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # torchrun's worker
            signal.signal(signal.SIGTERM, _on_sigterm)


def received() -> bool:
    """Whether a Ctrl-C came since ``install``: any failure after it is the interrupt's doing."""
    return _received


def check() -> None:
    """Raise KeyboardInterrupt again if one was received, even if something swallowed it
    (inside ``deferred()``: at the end of the block)."""
    if _received and not _deferring:
        raise KeyboardInterrupt


def wrote(path) -> None:
    """Note a finished output, so that an interrupted command can say what it left."""
    _written.append(str(path))


def written() -> list[str]:
    return list(dict.fromkeys(_written))


def stopped_by_launcher() -> bool:
    """Whether torchrun stopped this worker (SIGTERM: another one failed or was interrupted)."""
    return _stopped_by_launcher


def message() -> str:
    """The one line an interrupted command ends with."""
    what = ("stopped by torchrun (another worker failed or was interrupted)" if _stopped_by_launcher
            else "interrupted")
    if not _written:
        return f"{what}; no output was written"
    return f"{what}; written before it: {', '.join(written())} (complete files)"


@contextlib.contextmanager
def held():
    """Hold a Ctrl-C for a few statements that must happen together (a bar's last line and its newline),
    without raising one already received: whoever comes next checks."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


@contextlib.contextmanager
def deferred():
    """Hold a Ctrl-C until the block ends (keep the block short), then raise it.

    Already interrupted: the block does not start.
    """
    check()
    with held():
        yield
    check()
