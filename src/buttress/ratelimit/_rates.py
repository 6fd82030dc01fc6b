"""Rate strings: ``"100/minute"``, ``"10 per second"``, ``"10/second; 1000/hour"``.

One rate is an amount, ``/`` or ``per``, and a window: a unit (``second``, ``minute``,
``hour``, ``day``, plural or abbreviated: ``s``, ``sec``, ``min``, ``h``, ``hr``, ``d``; also
``ms``) or a duration (``5 minutes``, ``10s``, ``1h30m``). Several rates are separated by
``;``, ``,`` or ``|``. Case does not matter. This is the notation of the ``limits`` library
(flask-limiter, slowapi), which also takes ``month`` and ``year``; they have no fixed length,
so here they are refused with the number of days to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._validate import parse_duration, unit_seconds

__all__ = ["Rate", "parse_rates"]

# Patterns, not compiled objects: re compiles (and caches) them on first use, not at import.
_SEPARATORS = r"[;,|]"
_RATE = r"\s*(?P<limit>\d+(?:\.\d*)?|\.\d+)\s*(?:/|\bper\b)\s*(?P<window>.*?)\s*"
_UNIT = r"[a-z]+"
_WINDOW_NAMES = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units of cost per ``window`` seconds, as ``text`` wrote it."""

    limit: float
    window: float
    text: str

    @property
    def name(self) -> str:
        """A scope name for this rate: ``per_minute``, ``per_10s``, ``per_500ms``."""
        return f"per_{window_name(self.window)}"


def window_name(window: float) -> str:
    """``window`` seconds as a name part: ``minute``, ``10s``, ``2h``, ``500ms``."""
    if window in _WINDOW_NAMES:
        return _WINDOW_NAMES[window]
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if window >= size and (window / size).is_integer():
            return f"{int(window // size)}{unit}"
    if (window * 1000).is_integer():
        return f"{int(window * 1000)}ms"
    return f"{window:g}s"


def parse_rates(text: str) -> list[Rate]:
    """The rates in ``text``, in its order; ``ValueError`` says which one is wrong and why.

    >>> [(r.limit, r.window) for r in parse_rates("10/second; 1000 per hour")]
    [(10.0, 1.0), (1000.0, 3600.0)]
    """
    if not isinstance(text, str):
        raise ValueError(f"a rate is a string such as '100/minute', got {text!r}")
    parts = [p.strip() for p in re.split(_SEPARATORS, text)]
    if not any(parts):
        raise ValueError(f"no rate in {text!r}: write e.g. '100/minute'")
    return [_parse_one(part) for part in parts if part]


def _parse_one(text: str) -> Rate:
    match = re.fullmatch(_RATE, text, re.IGNORECASE)
    if match is None:
        raise ValueError(
            f"rate {text!r}: write an amount, '/' or 'per', and a window, e.g. '100/minute', "
            "'10 per second', '5/10s'"
        )
    limit = float(match["limit"])
    if limit <= 0:
        raise ValueError(f"rate {text!r}: the amount must be above 0")
    window_text = match["window"]
    if not window_text:
        raise ValueError(f"rate {text!r}: no window after the amount, e.g. '100/minute'")
    try:
        if re.fullmatch(_UNIT, window_text, re.IGNORECASE):  # "minute": one of it
            window = float(unit_seconds(window_text))
        else:
            window = parse_duration(window_text)
    except ValueError as exc:
        raise ValueError(f"rate {text!r}: {exc}") from None
    if window <= 0:
        raise ValueError(f"rate {text!r}: the window must be longer than 0")
    return Rate(limit, window, text)
