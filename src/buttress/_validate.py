"""Checks for configuration values: each raises :class:`ConfigError` naming the setting.

``bool`` is refused wherever a number is expected (``True`` is an ``int`` to Python, never a
sensible rate or size).
"""

from __future__ import annotations

import math

from .errors import ConfigError


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive(path: str, value: float) -> float:
    """A finite number of seconds (or other quantity) above zero."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise ConfigError(path, f"must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(path: str, value: float) -> float:
    """A share in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(path, f"must be in [0, 1], got {value!r}")
    return float(value)


def int_at_least(path: str, value: int, low: int) -> int:
    """An integer no smaller than ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(path, f"must be an integer >= {low}, got {value!r}")
    return value


def at_least(path: str, value: float, low: float) -> float:
    """A finite number no smaller than ``low``."""
    if not _is_number(value) or not low <= value < math.inf:
        raise ConfigError(path, f"must be a finite number >= {low:g}, got {value!r}")
    return float(value)


def timeout_or_none(path: str, value: float | None) -> float | None:
    """How long a caller may wait, in seconds: a number >= 0, or ``None`` for no bound (which
    ``inf`` means too: a deadline that never comes)."""
    if value is not None and (not _is_number(value) or not value >= 0):
        raise ConfigError(path, f"must be a number >= 0 or None, got {value!r}")
    return value
