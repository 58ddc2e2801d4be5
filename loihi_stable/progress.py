"""Progress bars (rate and ETA) that stay readable in a terminal and short in a CI log."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

from . import interrupts


class InterruptibleBar(tqdm):
    """Every update and every item checks for a Ctrl-C that was swallowed (``interrupts``).

    No monitor thread: tqdm's daemon thread redraws slow bars from outside the main thread, and a
    daemon thread writing to stderr while an interrupted command shuts down can abort the interpreter
    ("could not acquire lock for <stderr> at interpreter shutdown"). Bars check the time on every
    update instead (``miniters=1``), which is what the monitor exists to restore.
    """

    monitor_interval = 0

    def update(self, n=1):
        interrupts.check()
        return super().update(n)

    def close(self):
        """The final redraw and its newline together: a Ctrl-C between them would leave the bar's line
        open, and the interrupt's line would be printed onto its end."""
        with interrupts.held():
            super().close()
        interrupts.check()

    def __iter__(self):
        for item in super().__iter__():
            interrupts.check()
            yield item


def close_all() -> None:
    """End every open bar, so that the line printed next (an error, the interrupt) is the last one:
    a bar left open is redrawn when it is garbage collected, after everything else."""
    with interrupts.held():  # closing after the interrupt must not raise it again
        for bar in list(getattr(tqdm, "_instances", ())):
            try:
                bar.close()
            except Exception:  # noqa: BLE001  (a bar half torn down by the interrupt)
                pass


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm, redrawn 10 times a second on a terminal but only every 10 s into a file or pipe,
    where every redraw is kept (a 30-epoch run would otherwise log thousands of lines)."""
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    kwargs.setdefault("miniters", 1)
    return InterruptibleBar(iterable, **kwargs)
