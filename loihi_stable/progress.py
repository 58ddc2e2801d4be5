"""Progress bars (rate and ETA) that stay readable in a terminal and short in a CI log."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm, redrawn 10 times a second on a terminal but only every 10 s into a file or pipe,
    where every redraw is kept (a 30-epoch run would otherwise log thousands of lines)."""
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    return tqdm(iterable, **kwargs)
