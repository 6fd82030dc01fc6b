"""Old public names, kept as aliases that warn (``DeprecationWarning``) until they are removed.

Every renamed name is listed in :data:`RENAMED` (old -> new), which tests/test_deprecated.py
walks: each old name still works and warns at the caller's line. The test suite turns warnings
into errors, so no test or doc snippet uses an old name.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping

__all__ = ["RENAMED", "module_renames", "warn_renamed"]

RENAMED: dict[str, str] = {
    "MemoryManager(pressure_relief=...)": "MemoryManager(pressure_relief_enabled=...)",
    "MemoryManager.pressure_relief": "MemoryManager.pressure_relief_enabled",
    "ConnectionPool.stats()": "ConnectionPool.snapshot()",
    "AsyncConnectionPool.stats()": "AsyncConnectionPool.snapshot()",
    "buttress.PoolStats": "buttress.PoolSnapshot",
    "MemoryBackend.stats()": "MemoryBackend.snapshot()",
    "buttress.ratelimit.MemoryBackendStats": "buttress.ratelimit.MemoryBackendSnapshot",
    "CircuitBreaker.level": "CircuitBreaker.degradation_level",
}
"""Every rename: the old name and the one to use (one vocabulary across modules: a component's
numbers are its ``snapshot()``, a breaker's level is its ``degradation_level`` as in its
snapshot, a switch of the configuration is named as in the configuration)."""


def warn_renamed(old: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` (a key of :data:`RENAMED`) was renamed; ``stacklevel`` points at the
    caller's line (3: the caller of the function that calls this)."""
    warnings.warn(
        f"{old} is deprecated: use {RENAMED[old]} (the same thing, renamed)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def module_renames(module: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that serves each old name of ``names`` (old -> new) as the new
    one, with a warning."""

    def __getattr__(name: str) -> object:
        new = names.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(f"{module}.{name}")
        return getattr(sys.modules[module], new)

    return __getattr__
