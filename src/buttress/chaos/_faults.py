"""Fault injection: decide, with a seeded RNG, whether a call fails or is delayed.

:meth:`FaultInjector.decide` is the pure part (it draws from the injector's RNG and returns a
:class:`Fault`); :meth:`FaultInjector.call` / :meth:`FaultInjector.call_async` apply it around a
callable. Off unless ``enabled`` and some rate is above zero.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from .._clock import Clock, SystemClock
from ..errors import ConfigError, InjectedFault

P = ParamSpec("P")
T = TypeVar("T")

ExceptionFactory = type[BaseException] | Callable[[], BaseException]


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one call: wait ``delay`` seconds first, then raise if ``fail``."""

    fail: bool
    delay: float


NO_FAULT = Fault(False, 0.0)


class FaultInjector:
    """Injects failures and latency into calls, reproducibly.

    >>> inj = FaultInjector(failure_rate=0.5, seed=7)
    >>> [inj.decide().fail for _ in range(6)]
    [True, False, False, False, True, True]

    ``latency`` is a fixed delay or a ``(low, high)`` range, applied to a ``latency_rate``
    share of calls (all of them when ``latency_rate`` is not given). ``exception`` is the type
    (or a factory) raised for an injected failure; it defaults to :class:`~buttress.InjectedFault`.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
        seed: int | None = None,
        rng: random.Random | None = None,
        enabled: bool = True,
        clock: Clock | None = None,
        name: str = "fault_injector",
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigError("failure_rate", f"must be in [0, 1], got {failure_rate!r}")
        self.latency_range = _latency_range(latency)
        if latency_rate is None:
            latency_rate = 1.0 if self.latency_range is not None else 0.0
        if not 0.0 <= latency_rate <= 1.0:
            raise ConfigError("latency_rate", f"must be in [0, 1], got {latency_rate!r}")
        if not (
            isinstance(exception, type) and issubclass(exception, BaseException)
        ) and not callable(exception):
            raise ConfigError(
                "exception", f"must be an exception type or factory, got {exception!r}"
            )
        self.failure_rate = float(failure_rate)
        self.latency_rate = float(latency_rate) if self.latency_range is not None else 0.0
        self.exception = exception
        self.enabled = enabled
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self._rng = rng if rng is not None else random.Random(seed)
        self._lock = threading.Lock()
        self.injected_failures = 0
        self.injected_delays = 0
        self.calls = 0

    @property
    def active(self) -> bool:
        """Whether this injector can do anything to a call right now."""
        return self.enabled and (self.failure_rate > 0.0 or self.latency_rate > 0.0)

    def decide(self) -> Fault:
        """Draw the fault for one call (counted in ``calls`` / ``injected_*``)."""
        if not self.active:
            return NO_FAULT
        with self._lock:
            self.calls += 1
            rng = self._rng
            delay = 0.0
            if self.latency_rate and rng.random() < self.latency_rate:
                assert self.latency_range is not None
                low, high = self.latency_range
                delay = low if low == high else rng.uniform(low, high)
                self.injected_delays += 1
            fail = bool(self.failure_rate) and rng.random() < self.failure_rate
            if fail:
                self.injected_failures += 1
        return Fault(fail, delay)

    def make_exception(self) -> BaseException:
        exc = self.exception()
        if isinstance(exc, BaseException):
            with contextlib.suppress(AttributeError):  # exceptions with __slots__
                exc.injected = True  # type: ignore[attr-defined]
            return exc
        raise TypeError(f"{self.name}: exception factory returned {exc!r}, not an exception")

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` with the fault drawn for this call applied first."""
        fault = self.decide()
        if fault.delay:
            self.clock.sleep(fault.delay)
        if fault.fail:
            raise self.make_exception()
        return fn(*args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The async twin of :meth:`call`; the delay never blocks the event loop."""
        fault = self.decide()
        if fault.delay:
            await self.clock.asleep(fault.delay)
        if fault.fail:
            raise self.make_exception()
        return await fn(*args, **kwargs)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return (
            f"FaultInjector(name={self.name!r}, failure_rate={self.failure_rate}, "
            f"latency={self.latency_range}, latency_rate={self.latency_rate}, "
            f"enabled={self.enabled})"
        )


def _latency_range(latency: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if latency is None:
        return None
    if isinstance(latency, int | float) and not isinstance(latency, bool):
        if latency < 0:
            raise ConfigError("latency", f"must be >= 0, got {latency!r}")
        return (float(latency), float(latency))
    if isinstance(latency, tuple | list) and len(latency) == 2:
        low, high = float(latency[0]), float(latency[1])
        if not 0 <= low <= high:
            raise ConfigError("latency", f"range must satisfy 0 <= low <= high, got {latency!r}")
        return (low, high)
    raise ConfigError("latency", f"must be seconds or a (low, high) pair, got {latency!r}")
