"""Values people type, one parser per kind: memory sizes, durations, bounded finite numbers, weighted names.

Every command that takes such a value parses it here (directly, or through the click `ParamType`s below), so
`--memory-limit 0GiB`, `1.2.3GiB`, `--max-seconds nan` or `--gpus T4=1e308,L4=1e308` fail the same way
everywhere: one line naming the option and what it expects (`UserError`, or click's usage error with exit
status 2), never a traceback and never a value that silently disables what it sets.
"""

from __future__ import annotations

import math
import re

import click

from mbbench.errors import UserError

SIZE_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9,
              "GiB": 2**30, "TB": 10**12, "TiB": 2**40}
DURATION_UNITS = {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0}
NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"  # decimal, no sign, no nan/inf
MAX_BYTES = 2**60  # an exbibyte: anything above is a typo, not a device
MAX_WEIGHT = 1e6  # relative weights; beyond this ratio a basket GPU's score cannot move the sum


def parse_size(text: str, option: str = "--memory-limit") -> int:
    """'24GiB', '24 GB', '512MiB', '1.5TiB' -> bytes (int, > 0).

    Raises UserError for a malformed text, a missing or unknown unit, zero, or more than 2^60 bytes.
    """
    match = re.fullmatch(rf"\s*({NUMBER})\s*([A-Za-z]+)\s*", text or "")
    if not match or match.group(2) not in SIZE_UNITS:
        raise UserError(f"{option} {text!r}: expected a size like 24GiB, 24GB or 512MiB "
                        f"(units: {', '.join(SIZE_UNITS)})")
    size = float(match.group(1)) * SIZE_UNITS[match.group(2)]
    if size > MAX_BYTES:  # before int(): 1e400GiB is inf
        raise UserError(f"{option} {text!r}: more than 2^60 bytes; expected a device memory size")
    size = int(size)
    if size <= 0:
        raise UserError(f"{option} {text!r}: a memory size must be positive (leave the option out for no cap)")
    return size


def parse_seconds(text: str, option: str = "--max-seconds") -> float:
    """'90', '90s', '1.5min', '2h' -> seconds (float, finite, > 0). Raises UserError otherwise (nan, inf, 0)."""
    match = re.fullmatch(rf"\s*({NUMBER})\s*([a-z]*)\s*", text or "")
    if not match or match.group(2) not in DURATION_UNITS:
        raise UserError(f"{option} {text!r}: expected a duration like 90, 90s, 1.5min or 2h")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"{option} {text!r}: a duration must be a positive, finite number of seconds")
    return seconds


def parse_number(text: str, option: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite float within [low, high] (an end is excluded when `low_open`/`high_open`).

    Raises UserError for nan, inf, a malformed text or a value out of range.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{option} {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise UserError(f"{option} {text!r}: must be a finite number")
    below = low is not None and (value < low or (low_open and value == low))
    above = high is not None and (value > high or (high_open and value == high))
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise UserError(f"{option} {text!r}: must be in {left}{'-inf' if low is None else f'{low:g}'}, "
                        f"{'inf' if high is None else f'{high:g}'}{right}")
    return value


def parse_weights(text: str, option: str = "--gpus") -> dict[str, float]:
    """'T4,L4=2,H100' -> {"T4": 1.0, "L4": 2.0, "H100": 1.0}: names with relative weights (default 1).

    Weights are bounded by 1e6 so sums and weighted means of them stay finite (1e308 + 1e308 is inf).
    Names are returned as typed (resolving them is the caller's). Raises UserError for an empty name, a name
    given twice, a weight that is not a finite number in [0, 1e6], or weights that are all zero.
    """
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, equals, weight_text = (x.strip() for x in part.partition("="))
        if not name:
            raise UserError(f"{option} {text!r}: empty name; expected e.g. T4,L4=2,H100")
        if name in weights:
            raise UserError(f"{option} {text!r}: {name} is named twice")
        weights[name] = parse_number(weight_text, f"{option} weight of {name}", 0.0, MAX_WEIGHT) if equals else 1.0
    if not any(weights.values()):
        raise UserError(f"{option} {text!r}: every weight is zero")
    return weights


class _Parsed(click.ParamType):
    """A click type around one of the parsers above: its UserError becomes click's usage error (exit 2)."""

    def __init__(self, name: str, parse) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            value = str(value)
        option = param.opts[0] if param is not None and param.opts else self.name
        try:
            return self._parse(value, option)
        except UserError as error:
            self.fail(str(error).removeprefix(f"{option} "), param, ctx)


SIZE = _Parsed("size", parse_size)
SECONDS = _Parsed("seconds", parse_seconds)


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> click.ParamType:
    """A click type for a finite float in a range (nan and inf refused): `type=number(0, 1, high_open=True)`."""
    return _Parsed("number", lambda text, option: parse_number(text, option, low, high, low_open, high_open))
