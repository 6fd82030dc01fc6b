"""``load_test``: many concurrent users running an operation, with latency percentiles.

>>> from buttress.testing import isolated_infrastructure
>>> with isolated_infrastructure({"circuit_breakers": {"svc": {}}}) as infra:  # doctest: +SKIP
...     result = load_test(infra, lambda: None, service="svc", concurrent_users=50,
...                        duration=10.0, operations_per_user=100)
>>> result.success_rate, result.throughput  # doctest: +SKIP
(1.0, 61234.5)

Each user runs ``operations_per_user`` operations one after another, stopping early when
``duration`` seconds have passed. Latencies go into an HDR-style histogram (1/128 precision).
Refusals (:class:`~buttress.RejectedError`) are counted by reason, other exceptions by type.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .._concurrency import is_async_callable
from .._errors import ConfigError, LoadShedError, RejectedError
from .._histogram import Histogram
from .._infrastructure import Infrastructure
from .._validate import int_at_least, int_between, positive

__all__ = ["LoadTestResult", "default_context", "load_test", "load_test_async"]

MAX_USERS = 10_000
"""The most ``concurrent_users`` (a thread or a task each, all made at the start)."""


@dataclass(frozen=True, slots=True)
class LoadTestResult:
    """What a load test measured. Latencies in seconds; throughput in operations per second."""

    mode: str
    concurrent_users: int
    operations: int
    successes: int
    success_rate: float
    elapsed: float
    throughput: float
    average_latency: float
    p50: float
    p95: float
    p99: float
    max_latency: float
    rejections: dict[str, int]
    errors: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human-readable report."""
        ms = 1000.0
        out = [
            f"{self.operations:,} operations by {self.concurrent_users} users ({self.mode}) "
            f"in {self.elapsed:.2f} s: {self.throughput:,.0f} ops/s",
            f"success rate {self.success_rate:.2%}",
            f"latency avg {self.average_latency * ms:.3f} ms, p50 {self.p50 * ms:.3f}, "
            f"p95 {self.p95 * ms:.3f}, p99 {self.p99 * ms:.3f}, max {self.max_latency * ms:.3f} ms",
        ]
        if self.rejections:
            out.append(
                "refused: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejections.items()))
            )
        if self.errors:
            out.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        return out


def default_context(user: int) -> dict[str, str]:
    """User ``user`` of org ``user % 5``: ids for hierarchical limits."""
    return {"user_id": f"user-{user}", "org_id": f"org-{user % 5}"}


class _User:
    """One simulated user's tallies (written by that user only; merged at the end)."""

    __slots__ = ("done", "errors", "histogram", "ok", "rejections")

    def __init__(self) -> None:
        self.histogram = Histogram()
        self.done = 0
        self.ok = 0
        self.rejections: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, RejectedError):
            reason = type(exc).__name__
            if isinstance(exc, LoadShedError):
                reason = f"{reason}({exc.reason})"
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
        else:
            kind = type(exc).__name__
            self.errors[kind] = self.errors.get(kind, 0) + 1


def _check(concurrent_users: int, duration: float, operations_per_user: int, mode: str) -> None:
    int_between("concurrent_users", concurrent_users, 1, MAX_USERS)
    positive("duration", duration)
    int_at_least("operations_per_user", operations_per_user, 1)
    if mode not in ("asyncio", "threads"):
        raise ConfigError("mode", f"must be 'asyncio' or 'threads', got {mode!r}")


def load_test(
    infra: Infrastructure | str | None,
    operation: Callable[..., Any] | None = None,
    *,
    concurrent_users: int = 50,
    duration: float = 10.0,
    operations_per_user: int = 100,
    mode: Literal["asyncio", "threads"] = "asyncio",
    service: str | None = None,
    context: Callable[[int], Mapping[str, Any]] = default_context,
    progress: bool | None = None,
) -> LoadTestResult:
    """Run the load test and return what it measured (see the module docstring).

    With ``service``, each operation runs through ``infra.call`` / ``infra.call_async`` with
    the user's ``context(user)`` (hierarchical limits see many users in a few orgs); without,
    ``operation()`` is called bare. In ``asyncio`` mode each user is a task (``operation`` may
    be a coroutine function); in ``threads`` mode each user is a thread. ``progress`` shows a
    progress bar (default: when stderr is a terminal).

    ``infra`` may be the namespace of an open infrastructure (as the guide's
    ``load_test_enhanced_infrastructure(namespace, ...)``). Without ``operation``, each
    operation does nothing: the test measures the protection itself (with ``service``).
    """
    _check(concurrent_users, duration, operations_per_user, mode)
    infra = _infrastructure(infra)
    if operation is None:
        operation = _noop
    if service is not None and infra is None:
        raise ConfigError("service", "needs an infrastructure to protect the operation")
    if mode == "asyncio":
        return asyncio.run(
            load_test_async(
                infra,
                operation,
                concurrent_users=concurrent_users,
                duration=duration,
                operations_per_user=operations_per_user,
                service=service,
                context=context,
                progress=progress,
            )
        )
    users = [_User() for _ in range(concurrent_users)]
    start = time.perf_counter()
    deadline = start + duration
    run = _sync_runner(infra, operation, service)
    threads = [
        threading.Thread(
            target=_run_user_sync,
            args=(run, users[u], context(u), operations_per_user, deadline),
            name=f"buttress-load-{u}",
            daemon=True,
        )
        for u in range(concurrent_users)
    ]
    bar = _Progress.start(progress, concurrent_users * operations_per_user, duration)
    for t in threads:
        t.start()
    while alive := [t for t in threads if t.is_alive()]:
        alive[0].join(0.1)
        bar.update(sum(u.done for u in users), time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    bar.finish(sum(u.done for u in users), elapsed)
    return _result("threads", users, elapsed)


async def load_test_async(
    infra: Infrastructure | str | None,
    operation: Callable[..., Any] | None = None,
    *,
    concurrent_users: int = 50,
    duration: float = 10.0,
    operations_per_user: int = 100,
    service: str | None = None,
    context: Callable[[int], Mapping[str, Any]] = default_context,
    progress: bool | None = None,
) -> LoadTestResult:
    """:func:`load_test` in asyncio mode, from inside a running event loop."""
    _check(concurrent_users, duration, operations_per_user, "asyncio")
    infra = _infrastructure(infra)
    if operation is None:
        operation = _noop
    users = [_User() for _ in range(concurrent_users)]
    start = time.perf_counter()
    deadline = start + duration
    run = _async_runner(infra, operation, service)
    bar = _Progress.start(progress, concurrent_users * operations_per_user, duration)
    tasks = [
        asyncio.ensure_future(
            _run_user_async(run, users[u], context(u), operations_per_user, deadline)
        )
        for u in range(concurrent_users)
    ]
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.1)
        bar.update(sum(u.done for u in users), time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    bar.finish(sum(u.done for u in users), elapsed)
    return _result("asyncio", users, elapsed)


def _noop(*args: Any, **kwargs: Any) -> None:
    """The default operation: nothing (a pooled service passes it the connection)."""


def _infrastructure(infra: Infrastructure | str | None) -> Infrastructure | None:
    """``infra``, or the open infrastructure its namespace names (``LookupError`` if none)."""
    if isinstance(infra, str):
        from .._infrastructure._registry import lookup

        return lookup(infra)
    return infra


def _sync_runner(
    infra: Infrastructure | None, operation: Callable[..., Any], service: str | None
) -> Callable[[Mapping[str, Any]], Any]:
    if is_async_callable(operation):
        raise ConfigError("operation", "threads mode runs plain functions; use mode='asyncio'")
    if service is None:
        return lambda ctx: operation()
    assert infra is not None
    call = infra.call
    return lambda ctx: call(service, operation, context=ctx)


def _async_runner(
    infra: Infrastructure | None, operation: Callable[..., Any], service: str | None
) -> Callable[[Mapping[str, Any]], Any]:
    is_async = is_async_callable(operation)
    if service is None:
        if is_async:
            return lambda ctx: operation()
        return lambda ctx: _done(operation())
    assert infra is not None
    if is_async:
        call_async = infra.call_async
        return lambda ctx: call_async(service, operation, context=ctx)
    call = infra.call
    return lambda ctx: _done(call(service, operation, context=ctx))


async def _done(value: Any) -> Any:
    # An operation may be a plain callable that returns an awaitable (lambda: client.get(u)).
    if inspect.isawaitable(value):
        return await value
    return value


def _run_user_sync(
    run: Callable[[Mapping[str, Any]], Any],
    user: _User,
    ctx: Mapping[str, Any],
    n: int,
    deadline: float,
) -> None:
    clock = time.perf_counter
    record = user.histogram.record
    for _ in range(n):
        t0 = clock()
        if t0 >= deadline:
            break
        try:
            run(ctx)
        except Exception as exc:
            user.failed(exc)
        else:
            user.ok += 1
        record(clock() - t0)
        user.done += 1


async def _run_user_async(
    run: Callable[[Mapping[str, Any]], Any],
    user: _User,
    ctx: Mapping[str, Any],
    n: int,
    deadline: float,
) -> None:
    clock = time.perf_counter
    record = user.histogram.record
    for _ in range(n):
        t0 = clock()
        if t0 >= deadline:
            break
        try:
            await run(ctx)
        except Exception as exc:
            user.failed(exc)
        else:
            user.ok += 1
        record(clock() - t0)
        user.done += 1


def _result(mode: str, users: list[_User], elapsed: float) -> LoadTestResult:
    h = Histogram()
    rejections: dict[str, int] = {}
    errors: dict[str, int] = {}
    ok = done = 0
    for u in users:
        h.merge(u.histogram)
        ok += u.ok
        done += u.done
        for k, v in u.rejections.items():
            rejections[k] = rejections.get(k, 0) + v
        for k, v in u.errors.items():
            errors[k] = errors.get(k, 0) + v
    return LoadTestResult(
        mode=mode,
        concurrent_users=len(users),
        operations=done,
        successes=ok,
        success_rate=ok / done if done else 0.0,
        elapsed=elapsed,
        throughput=done / elapsed if elapsed > 0 else 0.0,
        average_latency=h.mean,
        p50=h.percentile(50),
        p95=h.percentile(95),
        p99=h.percentile(99),
        max_latency=h.max,
        rejections=rejections,
        errors=errors,
    )


class _Progress:
    """A progress bar on stderr (rich when installed, a plain line otherwise), or nothing."""

    def __init__(self, total: int, duration: float, rich_progress: Any) -> None:
        self.total = total
        self.duration = duration
        self._rich = rich_progress
        self._task: Any = None
        if rich_progress is not None:
            rich_progress.start()
            self._task = rich_progress.add_task("load test", total=total)

    @classmethod
    def start(cls, enabled: bool | None, total: int, duration: float) -> _Progress | _NoProgress:
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return _NoProgress()
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return cls(total, duration, None)
        return cls(
            total,
            duration,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} ops"),
                TimeElapsedColumn(),
                transient=True,
            ),
        )

    def update(self, done: int, elapsed: float) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
        else:
            sys.stderr.write(f"\rload test: {done:,}/{self.total:,} ops, {elapsed:5.1f}s")
            sys.stderr.flush()

    def finish(self, done: int, elapsed: float) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            self._rich.stop()
        else:
            sys.stderr.write(f"\rload test: {done:,}/{self.total:,} ops, {elapsed:5.1f}s\n")


class _NoProgress:
    def update(self, done: int, elapsed: float) -> None:
        pass

    def finish(self, done: int, elapsed: float) -> None:
        pass
