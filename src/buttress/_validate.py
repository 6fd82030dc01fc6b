"""Checks for configuration values: each raises :class:`ConfigError` naming the setting.

``bool`` is refused wherever a number is expected (``True`` is an ``int`` to Python, never a
sensible rate or size).
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

from ._errors import ConfigError


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (``True`` is an int to Python, not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive(path: str, value: float) -> float:
    """A finite number of seconds (or other quantity) above zero."""
    if not is_number(value) or not 0 < value < math.inf:
        raise ConfigError(path, f"must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(path: str, value: float) -> float:
    """A share in [0, 1]."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(path, f"must be in [0, 1], got {value!r}")
    return float(value)


def int_at_least(path: str, value: int, low: int) -> int:
    """An integer no smaller than ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(path, f"must be an integer >= {low}, got {value!r}")
    return value


def is_finite(value: object) -> bool:
    """Whether ``value`` is a number (never a bool) that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)  # type: ignore[arg-type]


def in_interval(path: str, value: float, interval: str) -> float:
    """A number in ``interval``, written as in mathematics: ``"[0, 1)"`` takes 0 but not 1,
    ``"(0, 1/3]"`` takes 1/3 but not 0, ``"[1, inf]"`` any number from 1 up, infinity included.

    The message quotes the interval, so the rule and what the user reads cannot drift apart;
    one that runs to infinity reads as a bound ("must be a finite number >= 0").
    """
    low, high, low_open, high_open = _parse_interval(interval)
    ok = (
        is_number(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        raise ConfigError(path, f"must be {_described(interval)}, got {value!r}")
    return float(value)


_INTERVAL = re.compile(r"([\[(])([^,]+), ([^,]+)([\])])")


@functools.cache
def _parse_interval(interval: str) -> tuple[float, float, bool, bool]:
    match = _INTERVAL.fullmatch(interval)
    if match is None:
        raise ValueError(f"not an interval: {interval!r}")
    opening, low, high, closing = match.groups()
    return _bound(low), _bound(high), opening == "(", closing == ")"


def _bound(text: str) -> float:
    return float(Fraction(text)) if "/" in text else float(text)


def _described(interval: str) -> str:
    _, high, low_open, high_open = _parse_interval(interval)
    if high != math.inf:
        return f"in {interval}"
    low = interval[1:].partition(",")[0]
    finite = "finite " if high_open else ""
    return f"a {finite}number {'>' if low_open else '>='} {low}"


def at_least(path: str, value: float, low: float) -> float:
    """A finite number no smaller than ``low``."""
    return in_interval(path, value, f"[{low:g}, inf)")


def timeout_or_none(path: str, value: float | None) -> float | None:
    """How long a caller may wait, in seconds: a number >= 0, or ``None`` for no bound (which
    ``inf`` means too: a deadline that never comes)."""
    if value is not None and (not is_number(value) or not value >= 0):
        raise ConfigError(path, f"must be a number >= 0 or None, got {value!r}")
    return value
