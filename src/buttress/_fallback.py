"""Fallbacks: which errors of a protected call a ``fallback=`` answers instead of the caller.

A fallback stands in for the dependency when it is unavailable, so it answers:

* a refusal (:class:`~buttress.RejectedError`: an open breaker, a rate limit, shedding, no pool
  member in time): the call never ran;
* a failure the service's breaker records (its ``record`` / ``ignore`` rules, a timeout
  included); with no breaker, any ``Exception``.

It never answers a mistake in the program, which a stand-in answer would hide: a
:class:`~buttress.ConfigError` or :class:`~buttress.ContextError` (the call or the request is
wrong), and ``TypeError``, ``AttributeError``, ``NameError``, ``AssertionError``,
``NotImplementedError`` and ``ImportError`` (a wrong call signature, a typo), nor an exception
that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._breaker._outcome import Outcome, classify
from ._errors import ConfigError, ContextError, RejectedError

if TYPE_CHECKING:
    from ._breaker._config import BreakerConfig

__all__ = ["PROGRAMMING_ERRORS", "falls_back"]

PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ContextError,
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    ImportError,
)


def falls_back(breaker: BreakerConfig | None, exc: BaseException) -> bool:
    """Whether a fallback answers a protected call that raised ``exc``."""
    if not isinstance(exc, Exception) or isinstance(exc, PROGRAMMING_ERRORS):
        return False
    if isinstance(exc, RejectedError):
        return True
    return breaker is None or classify(breaker, exc) is Outcome.FAILURE
