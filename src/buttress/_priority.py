"""A call's priority: which calls overload and a degraded breaker shed first.

``sheddable`` calls go first (at a monitor's warning level, and at any degraded level of a
breaker), ``normal`` ones next (at a monitor's critical level, and with the degraded level's
shed probability), ``critical`` ones never (only an open breaker refuses them). The values are
chosen so that a bool read as a priority means what ``critical=`` always meant: ``False`` is
normal and ``True`` critical.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from ._errors import ConfigError

__all__ = ["CRITICAL", "NAMES", "NORMAL", "SHEDDABLE", "PriorityName", "name_of", "priority_of"]

NORMAL: Final = 0
CRITICAL: Final = 1
SHEDDABLE: Final = 2

PriorityName: TypeAlias = Literal["critical", "normal", "sheddable"]
NAMES: Final[dict[str, int]] = {"critical": CRITICAL, "normal": NORMAL, "sheddable": SHEDDABLE}
_BY_VALUE = {v: k for k, v in NAMES.items()}


def priority_of(priority: str | None, critical: bool | None, default: int) -> int:
    """The priority a call asked for: ``priority`` by name, or ``critical=True`` (shorthand for
    ``"critical"``; ``False`` for ``"normal"``), else ``default`` (its service's)."""
    if priority is not None:
        value = NAMES.get(priority) if isinstance(priority, str) else None
        if value is None:
            raise ConfigError(
                "priority", f"must be one of critical, normal, sheddable; got {priority!r}"
            )
        if critical is not None and (value == CRITICAL) != bool(critical):
            raise ConfigError(
                "critical",
                f"critical={critical!r} contradicts priority={priority!r}: give one of them",
            )
        return value
    if critical is None:
        return default
    if not isinstance(critical, bool):
        raise ConfigError("critical", f"must be True or False, got {critical!r}")
    return CRITICAL if critical else NORMAL


def name_of(priority: int) -> str:
    return _BY_VALUE[priority]
