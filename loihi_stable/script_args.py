"""Command lines of the benchmark and experiment scripts, declared as data: name -> default (or
(default, help)); the type is the default's (``types`` gives it where the default is None); a bool
is a flag. Positional arguments: name -> (nargs, help)."""
from __future__ import annotations

import argparse
from pathlib import Path


def parse(doc: str, options: dict, argv=None, positional: dict | None = None, types: dict | None = None):
    """An argparse namespace for a script whose docstring's first line describes it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, (nargs, help_text) in (positional or {}).items():  # nargs: None (required), "?" or "*"
        parser.add_argument(name, nargs=nargs, help=help_text)
    for name, value in options.items():
        default, help_text = value if isinstance(value, tuple) else (value, None)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            kind = (types or {}).get(name) or (type(default) if default is not None else str)
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    return parser.parse_args(argv)


def output_stem(folder: str | Path, name: str) -> Path:
    """``folder``/``name`` (without suffix), the folder made if missing: where a script writes its tables."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    """A benchmark's result: one line saying what was measured, then the table."""
    from .report import table

    print(title)
    print(table(headers, rows))
