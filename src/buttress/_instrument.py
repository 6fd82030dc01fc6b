"""Service instrumentation: latency, throughput, errors and cache hits per service.

``Infrastructure.protect`` records every protected call here; ``infra.instrument(...)``
decorates any function or class; ``infra.cache_hit(service)`` / ``cache_miss`` count cache
lookups. Snapshots feed the health report and the metrics exporters.

>>> m = ServiceMetrics("catalog")
>>> m.record(0.002, None, now=0.0)
>>> m.cache_hit(); m.cache_miss()
>>> s = m.snapshot(now=1.0)
>>> s.calls, s.errors, s.cache_hit_ratio
(1, 0, 0.5)
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._concurrency import is_async_callable
from ._counting import count_of
from ._errors import CallTimeoutError, ConfigError, RejectedError
from ._fork import fork_safe_lock
from ._histogram import Histogram

if TYPE_CHECKING:
    from ._retry import RetryBudget, RetryBudgetSnapshot

__all__ = [
    "METRICS",
    "RECORDING",
    "ServiceMetrics",
    "ServiceSnapshot",
    "instrument_callable",
    "reset_recording",
]

METRICS = ("latency", "throughput", "errors", "cache_hits")

T = TypeVar("T")

# Throughput is counted per second over the last minute.
_SLOTS = 60

RECORDING: ContextVar[tuple[ServiceMetrics, ...]] = ContextVar("buttress_recording", default=())
"""The services whose calls are running in this context, outermost first: a call nested in
another call of its own service (an instrumented method calling another, an instrumented
function run by ``protect``) is that call's work, and is not counted again."""


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """One service's numbers. Latencies in seconds; ``throughput`` in calls per second."""

    name: str
    calls: int
    errors: int
    rejected: int
    error_rate: float
    errors_by_type: dict[str, int]
    rejected_by_reason: dict[str, int]
    throughput: float
    latency_mean: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    latency_max: float
    cache_hits: int
    cache_misses: int
    cache_hit_ratio: float | None
    timeouts: int = 0  # calls that ran past their timeout (CallTimeoutError), among errors
    fallbacks: int = 0  # failed or refused calls whose fallback answered instead
    # Retries by outcome: "retried" (a failed attempt followed by another), "recovered" (a
    # call that succeeded after retrying), and why retrying stopped: "exhausted", "deadline",
    # "budget" (the retry budget refused). Empty without a retry policy.
    retries: dict[str, int] = field(default_factory=dict)
    # The service's configured retry budget now ([services.NAME.retry.budget]), if any.
    retry_budget: RetryBudgetSnapshot | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checked(metrics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    wanted = tuple(metrics)
    unknown = sorted(str(m) for m in set(wanted) - set(METRICS))
    if unknown:
        raise ConfigError("metrics", f"unknown metric {unknown[0]!r} (known: {', '.join(METRICS)})")
    return wanted


class ServiceMetrics:
    """Counters for one service, safe from any thread, with no lock on the recording path.

    Every call is counted exactly (``itertools.count``, atomic). Latency and throughput come
    from the call's duration, queued on a deque (an atomic append) and folded in under a lock
    when read: every call of the first 1,024, then one call in 8, weighted 8 in the latency
    histogram and the throughput alike (so percentiles, mean and sum stay unbiased), plus any
    call slower than every one seen so far (so the maximum is exact). The cost per call is a
    counter bump and a compare.
    """

    _BATCH = 256
    _EXACT = 1024  # calls recorded one by one before sampling starts

    def __init__(
        self, name: str, metrics: Iterable[str] = METRICS, *, since: float | None = None
    ) -> None:
        self.name = name
        # When observation began (monotonic): throughput is over the time since, up to a
        # minute. None: from the first call.
        self._since = since
        # Some function of the service is instrumented: its calls may nest (RECORDING).
        self.instrumented = False
        self.metrics = _checked(metrics)
        self._lock = fork_safe_lock()
        self._seq = itertools.count()
        self._next = self._seq.__next__
        self._pending: deque[tuple[float, float, int]] = deque()
        self._append = self._pending.append
        self._latency = Histogram()
        self._peak = 0.0  # the slowest call not sampled so far
        self._errors = 0
        self.rejected = 0
        self._errors_by_type: dict[str, int] = {}
        self._rejected_by_reason: dict[str, int] = {}
        self._per_second = [0] * _SLOTS
        self._second = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.timeouts = 0
        self.fallbacks = 0
        self._retries: dict[str, int] = {}
        self.retry_budget: RetryBudget | None = None  # set by the service's route

    def want(self, metrics: Iterable[str]) -> None:
        """Publish ``metrics`` too: a service asked for twice publishes the union.

        (Every call is recorded whatever the set: ``metrics`` picks what exporters show.)
        """
        wanted = _checked(metrics)
        self.metrics = tuple(dict.fromkeys((*self.metrics, *wanted)))

    def record(self, duration: float, error: BaseException | None, *, now: float) -> None:
        """Count one finished call (``error`` is what it raised, if anything)."""
        n = self._next()
        if error is not None:
            self._error(error)
        if n >= self._EXACT:
            if n & 7:
                if duration > self._peak:  # a racy read costs at most an extra entry
                    self._peak = duration
                    self._append((now, duration, 0))  # weight 0: the maximum only
                return
            self._append((now, duration, 8))
        else:
            self._append((now, duration, 1))
        if len(self._pending) > self._BATCH:
            with self._lock:
                self._fold()

    def _error(self, error: BaseException) -> None:
        kind = type(error).__name__
        with self._lock:
            self._errors += 1
            self._errors_by_type[kind] = self._errors_by_type.get(kind, 0) + 1
            if isinstance(error, CallTimeoutError):
                self.timeouts += 1

    def record_fallback(self) -> None:
        """Count a failed or refused call whose fallback answered instead."""
        with self._lock:
            self.fallbacks += 1

    def record_retry(self, outcome: str) -> None:
        """Count a retry outcome (see :attr:`ServiceSnapshot.retries`)."""
        with self._lock:
            self._retries[outcome] = self._retries.get(outcome, 0) + 1

    @property
    def calls(self) -> int:
        return count_of(self._seq)

    @property
    def errors(self) -> int:
        return self._errors

    def record_rejection(self, error: RejectedError) -> None:
        """Count a call refused before it ran (by reason: the error's class name)."""
        kind = type(error).__name__
        with self._lock:
            self.rejected += 1
            self._rejected_by_reason[kind] = self._rejected_by_reason.get(kind, 0) + 1

    def cache_hit(self) -> None:
        with self._lock:
            self.cache_hits += 1

    def cache_miss(self) -> None:
        with self._lock:
            self.cache_misses += 1

    def snapshot(self, *, now: float) -> ServiceSnapshot:
        with self._lock:
            self._fold()
            self._advance(int(now))
            h = self._latency
            calls = count_of(self._seq)
            lookups = self.cache_hits + self.cache_misses
            throughput = self._throughput(now)
            return ServiceSnapshot(
                name=self.name,
                calls=calls,
                errors=self._errors,
                rejected=self.rejected,
                error_rate=self._errors / calls if calls else 0.0,
                errors_by_type=dict(self._errors_by_type),
                rejected_by_reason=dict(self._rejected_by_reason),
                throughput=throughput,
                latency_mean=h.mean,
                latency_p50=h.percentile(50),
                latency_p95=h.percentile(95),
                latency_p99=h.percentile(99),
                latency_max=h.max,
                cache_hits=self.cache_hits,
                cache_misses=self.cache_misses,
                cache_hit_ratio=self.cache_hits / lookups if lookups else None,
                timeouts=self.timeouts,
                fallbacks=self.fallbacks,
                retries=dict(self._retries),
                retry_budget=self.retry_budget.snapshot() if self.retry_budget else None,
            )

    def _throughput(self, now: float) -> float:
        """Calls per second over the last minute, or over the time observed when shorter (a
        service one second old reports its rate, not a sixtieth of it). Lock held, folded."""
        since = self._since
        observed = now - since if since is not None else 0.0
        if since is None or observed >= _SLOTS - 1:
            # the current second is partial: average over the full seconds before it
            recent = sum(self._per_second) - self._per_second[int(now) % _SLOTS]
            return recent / (_SLOTS - 1)
        # Every call since `since` is in the slots: count them all over the exact time.
        return sum(self._per_second) / observed if observed > 0 else 0.0

    def _fold(self) -> None:
        """Fold the queued durations in (lock held); pops exactly what was there."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        pop = pending.popleft
        h = self._latency
        record = h.record
        per_second = self._per_second
        if self._since is None:
            self._since = pending[0][0] - pending[0][1]  # the first call's start
        for _ in range(n):
            now, duration, weight = pop()
            if weight:
                record(duration, weight)
            elif duration > h.max:
                h.max = duration
            sec = int(now)
            if sec != self._second:
                self._advance(sec)
            if sec > self._second - _SLOTS:
                per_second[sec % _SLOTS] += weight

    def _advance(self, sec: int) -> None:
        gap = sec - self._second
        if gap <= 0:
            return
        for k in range(1, min(gap, _SLOTS) + 1):
            self._per_second[(self._second + k) % _SLOTS] = 0
        self._second = sec


def instrument_callable(
    target: Any, metrics: ServiceMetrics, monotonic: Callable[[], float]
) -> Any:
    """Wrap a function (sync or async) or every public method of a class."""
    if inspect.isclass(target):
        for attr, value in list(vars(target).items()):
            if attr.startswith("_"):
                continue
            if isinstance(value, staticmethod | classmethod):
                wrapped = type(value)(_wrap(value.__func__, metrics, monotonic))
                setattr(target, attr, wrapped)
            elif inspect.isfunction(value):
                setattr(target, attr, _wrap(value, metrics, monotonic))
        return target
    if callable(target):
        return _wrap(target, metrics, monotonic)
    raise TypeError(f"instrument: expected a function or a class, got {target!r}")


def _wrap(fn: Callable[..., Any], metrics: ServiceMetrics, monotonic: Callable[[], float]) -> Any:
    record = metrics.record
    metrics.instrumented = True
    if is_async_callable(fn):
        afn = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            running = RECORDING.get()
            if metrics in running:  # nested in a call of this service: counted there
                return await afn(*args, **kwargs)
            mark = RECORDING.set((*running, metrics))
            t0 = monotonic()
            try:
                result = await afn(*args, **kwargs)
            except BaseException as exc:
                t = monotonic()
                reset_recording(mark)
                record(t - t0, exc, now=t)
                raise
            t = monotonic()
            reset_recording(mark)
            record(t - t0, None, now=t)
            return result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        running = RECORDING.get()
        if metrics in running:  # nested in a call of this service: counted there
            return fn(*args, **kwargs)
        mark = RECORDING.set((*running, metrics))
        t0 = monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            t = monotonic()
            reset_recording(mark)
            record(t - t0, exc, now=t)
            raise
        t = monotonic()
        reset_recording(mark)
        record(t - t0, None, now=t)
        return result

    return wrapper


def reset_recording(mark: Token[tuple[ServiceMetrics, ...]]) -> None:
    """Undo a ``RECORDING.set``; a block left in another context (an async generator's
    ``finally`` run by the garbage collector) cannot, and needs not."""
    try:  # noqa: SIM105 (contextlib.suppress costs twice as much, on every call)
        RECORDING.reset(mark)
    except ValueError:
        pass
