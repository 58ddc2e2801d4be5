"""The types a stored record may hold, checked against its dataclass's annotations.

Checkpoints, the checkpoint embedded in a ``.net`` file and suite files come from disk and may be
hostile or damaged; a list where a mapping belongs must end as one line naming the field, not as an
``AttributeError`` deep inside a command.
"""
from __future__ import annotations

import math
import types
import typing


def type_name(value) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bytes: "bytes", bool: "true/false",
            int: "a whole number", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def matches(value, annotation) -> bool:
    """Whether ``value`` fits ``annotation`` (str, int, float, bool, list[...], dict, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin is list or annotation is list:
        (item,) = typing.get_args(annotation) or (object,)
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is object:
        return True
    return isinstance(value, annotation)


def check_fields(cls, data, where: str) -> None:
    """Every field of ``data`` that ``cls`` declares has the declared type (others are left to the caller)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type_name(data)}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in hints and not matches(value, hints[key]):
            raise ValueError(f"{where}['{key}'] must be {describe(hints[key])}, got {type_name(value)} {value!r:.40}")


def describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {describe(typing.get_args(annotation)[0]).removeprefix('a ')}s"
    return {str: "text", int: "a whole number", float: "a finite number", bool: "true/false", dict: "a mapping",
            list: "a list", type(None): "null"}.get(annotation, getattr(annotation, "__name__", str(annotation)))
