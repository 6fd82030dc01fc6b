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


def int_between(path: str, value: int, low: int, high: int) -> int:
    """An integer in [``low``, ``high``]: a setting that allocates (or opens) that many things
    at once has a ceiling, so a typo cannot take the process's memory."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(path, f"must be an integer in [{low}, {high}], got {value!r}")
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


# -- durations -------------------------------------------------------------------------------

UNITS: dict[str, Fraction] = {
    **dict.fromkeys(("ms", "msec", "millisecond", "milliseconds"), Fraction(1, 1000)),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), Fraction(1)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), Fraction(60)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), Fraction(3600)),
    **dict.fromkeys(("d", "day", "days"), Fraction(86400)),
}
"""Seconds per unit, under every spelling a duration or a rate's window may use (exact, so
``"300ms"`` is the float nearest 0.3)."""

_UNIT_NAMES = ("millisecond", "second", "minute", "hour", "day")

# Months and years have no fixed length; rate-limit libraries that take them disagree on it.
_NO_FIXED_LENGTH = {
    "month": "30 days",
    "months": "30 days",
    "year": "365 days",
    "years": "365 days",
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
# Patterns, not compiled objects: re compiles (and caches) them on first use, not at import.
_DURATION_PART = rf"\s*({_NUMBER})\s*([a-z]+)\s*"
_DURATION = rf"(?:\s*{_NUMBER}\s*[a-z]+\s*)+"


def unit_seconds(unit: str) -> Fraction:
    """Seconds in one ``unit`` (``"ms"``, ``"second"``, ``"min"``, ``"hours"``, ``"d"``...);
    ``ValueError`` names the units there are."""
    seconds = UNITS.get(unit.lower())
    if seconds is not None:
        return seconds
    if unit.lower() in _NO_FIXED_LENGTH:
        raise ValueError(
            f"{unit!r} has no fixed length: write it in days ({_NO_FIXED_LENGTH[unit.lower()]!r})"
        )
    import difflib  # only to word an error: kept off `import buttress`

    names = [*_UNIT_NAMES, *(name + "s" for name in _UNIT_NAMES)]
    near = difflib.get_close_matches(unit.lower(), names, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"unknown unit {unit!r} ({hint}units: ms, s, m, h, d or their names)")


def parse_duration(text: str) -> float:
    """Seconds in a duration written with units: ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``,
    ``"1d"``, ``"1h30m"``, ``"2 minutes"``; a unit is required (a number alone is a number of
    seconds, and is not text). ``ValueError`` says what is wrong.

    >>> parse_duration("1m30s")
    90.0
    """
    if not re.fullmatch(_DURATION, text, re.IGNORECASE):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, e.g. '500ms', '30s', "
            "'2m', '1h', '1d'"
        )
    parts = re.findall(_DURATION_PART, text, re.IGNORECASE)
    return float(sum(Fraction(n) * unit_seconds(u) for n, u in parts))


def describe_seconds(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it readable: ``"8.3h"``, ``"90s"``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds * 1000:.3g}ms"
