"""Budgets written the way the field writes them: '8/255', '1.5/255', '0.031'."""
from __future__ import annotations


def read_fraction(text: str) -> float:
    """'a/b' or 'a' (a, b decimal numbers) -> float; ValueError if it is neither or b is 0."""
    parts = text.replace(" ", "").split("/")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"not a number or fraction: {text!r}")
    value = float(parts[0])
    if len(parts) == 2:
        denominator = float(parts[1])
        if denominator == 0:
            raise ValueError(f"division by zero in {text!r}")
        value /= denominator
    return value


def check_eps(eps: float, written: str | None = None, error: type[Exception] = ValueError) -> float:
    """An L-inf budget must lie in [0, 1] (inputs are in [0, 1]); ``error`` naming the fix otherwise."""
    if not (isinstance(eps, (int, float)) and 0.0 <= eps <= 1.0):
        shown = f"{written} = {eps:.4g}" if written is not None and isinstance(eps, float) else f"{eps!r}"
        raise error(f"eps {shown} is outside [0, 1]: inputs are in [0, 1], write it on the /255 scale, e.g. 8/255")
    return float(eps) + 0.0  # -0 -> 0
