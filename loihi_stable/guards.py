"""What a command checks before it does any work: numbers in range, outputs that can be written
and that would not destroy an input.

A job that runs for an hour and then finds it cannot write its result has wasted the hour, and an
output that lands on its own input destroys it; both are refused up front, in one line.
"""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Iterable, Optional

from .errors import UserError

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
MAX_SEED = 2**63 - 1


def number(name: str, value: float, low: float | None = None, high: float | None = None,
           low_open: bool = False, fix: str = "") -> float:
    """``value`` if finite and inside [low, high] ((low, high] with ``low_open``), else a UserError."""
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and value > high
    if not math.isfinite(value) or below or above:
        left = "(" if low_open else "["
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise UserError(f"{name} must be a finite number in {span}, got {value:g}" + (f": {fix}" if fix else ""))
    return value


def choice(name: str, value, choices, error=UserError):
    """``value`` if it is one of ``choices``, else one line naming them all (an unknown attack, backend, ...)."""
    if value not in choices:
        raise error(f"unknown {name} '{value}': choose one of {', '.join(map(str, choices))}")
    return value


def integer(name: str, value: Optional[int], low: int, high: int | None = None) -> Optional[int]:
    if value is not None and (value < low or (high is not None and value > high)):
        raise UserError(f"{name} must be an integer in [{low}, {'inf' if high is None else high}], got {value}")
    return value


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: dict[str, Optional[Path]], inputs: Iterable[Optional[Path]] = ()) -> None:
    """Every output (by option name) can be written, replaces only a regular file, is not an input
    and not another output; plots have an image suffix."""
    inputs = [Path(p) for p in inputs if p is not None]
    seen: dict[Path, str] = {}
    for option, out in outputs.items():
        if out is None:
            continue
        out = Path(out)
        where = f"{option} '{out}'"
        if out.is_dir():
            raise UserError(f"{where} is a folder: give a file name inside it")
        if os.path.lexists(out):
            mode = os.stat(out).st_mode if out.exists() else 0
            if not stat.S_ISREG(mode):
                raise UserError(f"{where} exists and is not a regular file (a device, pipe, socket or broken link): "
                                "choose another output path")
        for source in inputs:
            if _same_file(out, source) or out.resolve() == source.resolve():
                raise UserError(f"{where} is also an input of this command and would be overwritten: "
                                "choose another output path")
        key = out.resolve()
        if key in seen:
            raise UserError(f"{where} is also given as {seen[key]}: give each output its own file")
        seen[key] = option
        folder = out.parent
        if not folder.is_dir():
            raise UserError(f"output folder '{folder}' of {option} does not exist: create it or choose another path")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"output folder '{folder}' of {option} is not writable: choose another path")
        if option == "--plot" and out.suffix.lower() not in PLOT_SUFFIXES:
            raise UserError(f"{where}: plots are written as {', '.join(PLOT_SUFFIXES)}; give a file name with one of them")
