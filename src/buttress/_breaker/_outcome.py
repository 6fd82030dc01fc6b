"""How a finished call counts: the one classification the breaker and the protect pipeline share.

A call ends in one of four ways. :func:`classify` decides which for a call that raised, by
the breaker's ``record`` / ``ignore`` settings; a call that returned is a success unless the
breaker's ``failure_result`` says otherwise (the shell asks it).

=============  ===================================================================
``SUCCESS``    counts in the window as a call that worked
``FAILURE``    counts as a failure (and may degrade or open the breaker)
``IGNORED``    an exception ``ignore`` names: counted in its own tally, nothing else
``CANCELLED``  the caller gave up (task cancelled, interrupt, exit): says nothing
               about the dependency, so it is neutral too
=============  ===================================================================
"""

from __future__ import annotations

import asyncio
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import BreakerConfig


class Outcome(IntEnum):
    """How one call ended, as the breaker counts it."""

    SUCCESS = 0
    FAILURE = 1
    IGNORED = 2
    CANCELLED = 3

    @property
    def health(self) -> bool | None:
        """What the outcome says about the dependency: ``True`` healthy, ``False`` failing,
        ``None`` nothing (ignored and cancelled calls). Adaptive limits learn from it."""
        return _HEALTH[self]


_HEALTH = {
    Outcome.SUCCESS: True,
    Outcome.FAILURE: False,
    Outcome.IGNORED: None,
    Outcome.CANCELLED: None,
}

# Ways a call can end that say nothing about the dependency's health.
CANCELLATION: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


def classify(config: BreakerConfig, exc: BaseException) -> Outcome:
    """The outcome of a call that raised ``exc``: cancelled, an injected fault (always a
    failure: chaos simulates one whatever ``record`` says), ignored, recorded, or else a
    success (an exception ``record`` does not name is the caller's business, not a sign that
    the dependency fails)."""
    if isinstance(exc, CANCELLATION):
        return Outcome.CANCELLED
    if getattr(exc, "injected", False) is True:
        return Outcome.FAILURE
    for matcher in config.ignore:
        if _matches(matcher, exc):
            return Outcome.IGNORED
    for matcher in config.record:
        if _matches(matcher, exc):
            return Outcome.FAILURE
    return Outcome.SUCCESS


def health_of(config: BreakerConfig | None, exc: BaseException) -> bool | None:
    """What a call that raised ``exc`` says about its dependency (see :attr:`Outcome.health`):
    as a breaker with ``config`` classifies it, or, with no breaker, a failure unless the
    caller gave up."""
    if config is not None:
        return classify(config, exc).health
    return None if isinstance(exc, CANCELLATION) else False


def _matches(matcher: Any, exc: BaseException) -> bool:
    if isinstance(matcher, type):
        return isinstance(exc, matcher)
    return bool(matcher(exc))
