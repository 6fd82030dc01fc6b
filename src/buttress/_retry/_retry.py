"""``Retry``: run an operation again after failures, with backoff, a deadline and a budget.

The class puts together its parts: the settings and shared decisions (``_core.py``, asking the
pure ``_plan.py``), the runs (``_runs_async.py`` and its generated twin ``_runs.py``), and here
the decorator. The protect pipeline runs a :class:`Retry` through ``run_retried`` /
``run_retried_async``, giving it the service's classification, clock and counters
(``ServiceCalls``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._runs import Runs
from ._runs_async import AsyncRuns

P = ParamSpec("P")
T = TypeVar("T")


class Retry(Runs, AsyncRuns):
    """Run an operation again when it fails, waiting a backoff between attempts.

    ``attempts``: the most times the operation runs (the first included). ``on``: which
    exceptions are retried, as exception classes or a predicate; by default the failures a
    breaker records (any ``Exception`` but an HTTP 4xx client error, a ``ConfigError`` or a
    programming error such as ``TypeError``) and refusals (:class:`~buttress.RejectedError`).
    ``on_result``: a predicate on a returned value that asks for another attempt (the last
    value is returned when attempts run out). ``deadline``: seconds from the first attempt
    after which no attempt starts. ``budget``: a :class:`RetryBudget` shared by the callers.
    ``retry_after``: reads the wait a failure asks for (default: a refusal's ``retry_after``,
    the ``Retry-After`` of an HTTP 429 or 503 answer). ``clock`` and ``seed`` make it
    deterministic. See docs/retries.md.
    """

    __slots__ = ()

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function (plain or coroutine) so each call is retried."""
        if not callable(fn):
            raise TypeError(f"Retry(...) decorates a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"Retry cannot decorate {getattr(fn, '__qualname__', fn)!r}: a generator's body "
                "runs as it is iterated, after the call has returned"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def retried_async(*args: Any, **kwargs: Any) -> Any:
                return await self.run_retried_async(fn, args, kwargs, None)

            return retried_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def retried(*args: Any, **kwargs: Any) -> Any:
            return self.run_retried(fn, args, kwargs, None)

        return retried
