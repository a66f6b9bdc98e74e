"""Typed parts to JSON and back, by their type hints: one rule for every dataclass a record holds.

`encode` is `dataclasses.asdict` (a part becomes a dict of its fields, recursively); `decode(cls, data)` walks
`cls`'s type hints and rebuilds each part from its dict: a field typed `Stats | None` gets a `Stats`, a
`list[LatencyPoint]` a list of them, a `dict[str, EngineInfo]` a dict of them, a `tuple[str, ...]` a tuple. Keys
a class does not know are left out (a file may carry fields of a later version); a missing required field
raises TypeError. Files of older schemas are brought to the current one first (`records.migrate`), so the
defaults an old record implies live there, never here.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, fields, is_dataclass
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints


def encode(part: Any) -> Any:
    """A dataclass as plain JSON types (dicts, lists, numbers, strings, None); anything else as it is."""
    return asdict(part) if is_dataclass(part) else part


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def decode(cls: type, data: dict) -> Any:
    """An instance of the dataclass `cls` from its dict; raises TypeError when `data` is not a dict or a required
    field is missing."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} needs a dict, got {type(data).__name__}")
    hints = _hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    return cls(**{name: convert(hints[name], data[name]) for name in known if name in data})


def convert(hint: Any, value: Any) -> Any:
    """`value` (JSON types) as `hint` describes it: dataclasses rebuilt, lists, tuples and dicts walked."""
    if value is None:
        return None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return convert(options[0], value) if len(options) == 1 else value
    if is_dataclass(hint):
        return decode(hint, value)
    if origin is list:
        return [convert(args[0], item) for item in value]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], item) for item in value)
        return tuple(convert(a, item) for a, item in zip(args, value)) if args else tuple(value)
    if origin is dict:
        return {key: convert(args[1], item) for key, item in value.items()}
    return value


def without_non_finite(data: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """`data` (nested dicts, lists, tuples) with every NaN or infinite float replaced by None, and where each
    was: ({"a": None}, {"a": "nan"}) for {"a": nan}. Strict JSON has no such numbers."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, {where: repr(data)}
    found: dict[str, str] = {}
    if isinstance(data, dict):
        clean = {}
        for name, value in data.items():
            clean[name], inner = without_non_finite(value, f"{where}.{name}" if where else str(name))
            found |= inner
        return clean, found
    if isinstance(data, (list, tuple)):
        items = [without_non_finite(value, f"{where}[{i}]") for i, value in enumerate(data)]
        for _, inner in items:
            found |= inner
        return type(data)(value for value, _ in items), found
    return data, found
