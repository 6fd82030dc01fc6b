"""The open infrastructures by namespace, held weakly: ``bt.health("app")`` finds one.

The guide's ``get_infrastructure_health(namespace)``. An infrastructure is listed from its
construction until :meth:`~buttress.Infrastructure.close`; one that is dropped without being
closed leaves the list when it is garbage-collected (the registry keeps nothing alive).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .._fork import fork_safe_lock

if TYPE_CHECKING:
    from .._health import HealthReport
    from ._infrastructure import Infrastructure

__all__ = ["health", "lookup", "register", "unregister"]

_lock = fork_safe_lock()
_open: weakref.WeakSet[Infrastructure] = weakref.WeakSet()


def register(infra: Infrastructure) -> None:
    with _lock:
        _open.add(infra)


def unregister(infra: Infrastructure) -> None:
    with _lock:
        _open.discard(infra)


def lookup(namespace: str) -> Infrastructure:
    """The open infrastructure named ``namespace``; ``LookupError`` when there is none, or
    more than one (two infrastructures may share a namespace: this cannot tell them apart)."""
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string, got {namespace!r}")
    with _lock:
        found = [i for i in _open if i.namespace == namespace and not i.closed]
        names = sorted({i.namespace for i in _open if not i.closed})
    if len(found) == 1:
        return found[0]
    if not found:
        known = f"open: {', '.join(map(repr, names))}" if names else "none is open"
        raise LookupError(f"no open infrastructure is named {namespace!r} ({known})")
    raise LookupError(
        f"{len(found)} open infrastructures are named {namespace!r}: call health() on the one "
        "you mean"
    )


def health(namespace: str) -> HealthReport:
    """The health report of the open :class:`~buttress.Infrastructure` named ``namespace``.

    >>> import buttress as bt
    >>> with bt.Infrastructure("reg-doc", env={}) as infra:
    ...     bt.health("reg-doc").overall_status
    'healthy'

    Raises ``LookupError`` when no open infrastructure has that name (a closed one is gone
    from the registry), or when several do.
    """
    return lookup(namespace).health()
