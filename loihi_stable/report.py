"""Plain-text tables for the terminal."""
from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def n_samples(count: int) -> str:
    return f"{count} sample{'s' if count != 1 else ''}"
