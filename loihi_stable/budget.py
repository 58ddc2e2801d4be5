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
