"""The protect pipeline: the layers a protected call passes through, in order, written once.

``_protect_async.py`` holds it for asyncio, and ``_protect.py``, generated from it by
``tools/async_to_sync.py``, for threads. Where the two differ, the difference is marked
``if True:  # ASYNC`` (the thread file keeps the ``else`` branch), and ``# ASYNC`` drops what
only asyncio needs.

The order (``enter``):

1. overload: memory, CPU and the event loop's lag shed by priority
   (:class:`~buttress.LoadShedError`; ``_overload/_gate.py``): cheapest first, and a call shed
   here has taken nothing;
2. rate limit: the limiter charges ``cost`` to every scope or refuses
   (:class:`~buttress.RateLimitExceeded`): a refused call never waits for a place;
3. bulkhead: a place among the calls in flight, perhaps after a wait
   (:class:`~buttress.BulkheadFullError`): before the breaker, so a half-open breaker's probe
   is never held while its caller waits for a place;
4. circuit breaker: admits, sheds (degraded, by priority) or refuses (open);
5. pool: a member is checked out (:class:`~buttress.PoolTimeoutError` when none comes);
6. chaos: an injected delay, then an injected failure;
7. the operation runs; then (``leave``) the member goes back, and the outcome is recorded by
   the breaker, the adaptive limit, the bulkhead (its adaptive limit learns the call's time)
   and the service's metrics. A value the operation returned is a failure where the breaker's
   ``failure_result`` says so (a ``with`` block returns none).

A layer that refuses raises and nothing after it runs; what earlier layers took is given back
(the rate-limit charge refunded, the bulkhead's place and the breaker's permit released), so
a refused call costs the caller nothing. One exception to the order: when the limiter's state
is shared (SQLite, Redis), the breaker is asked before the charge, so a call it refuses costs
no round trip (while it is closed it admits every call, so nothing else changes).

The steps are compiled per service (:func:`compile_steps_async`) into closures over only the
layers the service has: a protected call pays for no lookup and no absent layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from .._breaker._outcome import health_of
from .._breaker._states import BreakerState
from .._bulkhead._bulkhead import outcome_of
from .._concurrency import ExcInfo
from .._errors import PoolTimeoutError, RejectedError
from .._instrument import RECORDING, reset_recording
from ..ratelimit._decision import exceeded
from ._misuse import (
    GENERATORS,
    LAZY,
    NO_RESULT,
    UNCALLED,
    lazy_result,
    not_awaitable,
    wrong_pool,
)

if TYPE_CHECKING:
    from .._chaos import Chaos
    from .._clock import Clock
    from .._overload._gate import OverloadGate
    from ..ratelimit._decision import Decision
    from ._build import Route

T = TypeVar("T")

# A protected call in flight: (breaker ticket, pool lease, start time, the rate limiter's
# admitting Decision, None when nothing was charged, the bulkhead's permit or None). A plain
# tuple: it is made on every call.
Token = tuple[Any, Any, float, "Decision | None", Any]

AsyncSteps = tuple[
    Callable[[Any, int, float], Awaitable[Token]],  # enter(key, priority, cost)
    Callable[[Token, BaseException | None, Any], Awaitable[None]],  # leave(token, exc, result)
    Callable[[Token, Any, float], Awaitable[None]],  # abandon(token, key, cost): never ran
]


def compile_steps_async(
    route: Route, gate: OverloadGate | None, chaos: Chaos, clock: Clock
) -> AsyncSteps:
    """The steps of ``protect`` for one service: ``enter``, ``leave``, and ``abandon`` (give
    back all ``enter`` took, for a call that never ran)."""
    now = clock.monotonic
    limiter = route.limiter
    try_acquire_async = limiter.try_acquire_async if limiter is not None else None
    refund_async = limiter.refund_async if limiter is not None else None
    adaptive_record = limiter.record if limiter is not None and route.adaptive else None
    breaker = route.breaker
    begin_async = breaker.begin_async if breaker is not None else None
    end = breaker.end if breaker is not None else None
    # Only a breaker with failure_result judges returned values: the others keep end's path.
    end_returned = (
        breaker.end_returned
        if breaker is not None and breaker.config.failure_result is not None
        else None
    )
    release = breaker.release if breaker is not None else None
    abort = breaker.abort if breaker is not None else None
    breaker_config = breaker.config if breaker is not None else None
    breaker_first = route.shared_limit and begin_async is not None
    bulkhead = route.bulkhead
    check_overload = gate.check if gate is not None else None
    closed = BreakerState.CLOSED
    apool = route.apool
    pool_name = route.pool_name
    # Looked up on each call, not bound here: a target made after the route (an experiment
    # started later) must apply. With chaos off the mapping is empty: one test a call.
    injecting = chaos.injecting
    target = route.injector_name
    metrics = route.metrics
    record = metrics.record
    recording = RECORDING.get
    rejected = metrics.record_rejection

    async def undo_async(
        ticket: Any, limited: Any, key: Any, cost: float, permit: Any = None
    ) -> None:
        if ticket is not None and release is not None:
            release(ticket)
        if permit is not None:
            permit.release(outcome="ignored")
        if limited is not None and refund_async is not None:
            await refund_async(key, cost)

    async def enter_async(key: Any, priority: int, cost: float) -> Token:
        if check_overload is not None:
            try:
                check_overload(priority)
            except RejectedError as exc:
                rejected(exc)
                raise
        ticket = None
        if breaker_first:
            assert begin_async is not None
            try:
                ticket = await begin_async(priority)
            except RejectedError as exc:
                rejected(exc)
                raise
        limited = None  # the admitting decision, when the service has a limiter
        if try_acquire_async is not None:
            try:
                d = await try_acquire_async(key, cost)
            except BaseException:
                await undo_async(ticket, None, key, cost)
                raise
            if not d.allowed:
                await undo_async(ticket, None, key, cost)
                err = exceeded(d)
                rejected(err)
                raise err
            limited = d
        permit = None
        if bulkhead is not None:
            try:
                permit = await bulkhead.enter_async()
            except BaseException as exc:  # full, or interrupted while waiting
                await undo_async(ticket, limited, key, cost)
                if isinstance(exc, RejectedError):
                    rejected(exc)
                raise
        if begin_async is not None and not breaker_first:
            try:
                ticket = await begin_async(priority)
            except BaseException as exc:  # refused, or interrupted: the charge goes back
                await undo_async(None, limited, key, cost, permit)
                if isinstance(exc, RejectedError):
                    rejected(exc)
                raise
        lease = None
        if apool is not None:
            lease = apool.connection()
            try:
                await lease.__aenter__()
            except BaseException as exc:
                down = exc.connect_error if isinstance(exc, PoolTimeoutError) else None
                if down is not None and ticket is not None and abort is not None:
                    abort(ticket, down)  # the pool cannot connect: a failure, not a refusal
                    ticket = None
                await undo_async(ticket, limited, key, cost, permit)
                if isinstance(exc, RejectedError):
                    rejected(exc)
                raise
        elif pool_name is not None:  # the service's pool is for the other kind of caller
            await undo_async(ticket, limited, key, cost, permit)
            if True:  # ASYNC
                raise wrong_pool(route, asyncio_caller=True)
            else:
                raise wrong_pool(route, asyncio_caller=False)
        injector = injecting.get(target) if injecting else None
        if injector is not None:
            fault = injector.decide()
            if fault.delay:
                try:
                    await clock.asleep(fault.delay)
                except BaseException:  # interrupted before the operation ran: give all back
                    await abandon_async((ticket, lease, 0.0, limited, permit), key, cost)
                    raise
            if fault.fail:
                injected = injector.make_exception(fault)
                await leave_async((ticket, lease, now(), limited, permit), injected, NO_RESULT)
                raise injected
        return ticket, lease, now(), limited, permit

    async def leave_async(token: Token, exc: BaseException | None, result: Any) -> None:
        ticket, lease, t0, _, permit = token
        try:
            if lease is not None:
                await lease.__aexit__(type(exc) if exc is not None else None, exc, None)
        finally:  # interrupted while the pool resets the member: the call still happened
            t = now()
            failed = False  # a returned value that failure_result calls a failure
            if end_returned is not None and exc is None and result is not NO_RESULT:
                failed = end_returned(ticket, result)
            elif end is not None:
                end(ticket, exc)
            if permit is not None:
                permit.release(outcome="ignored" if failed else outcome_of(exc))
            if adaptive_record is not None:
                ok = (not failed) if exc is None else health_of(breaker_config, exc)
                if ok is not None:
                    adaptive_record(ok=ok, latency=t - t0)
            # Not inside an instrumented call of its own service, which counts it.
            if not (metrics.instrumented and metrics in recording()):
                record(t - t0, exc, now=t)
            if exc is None and injecting:
                injector = injecting.get(target)
                if injector is not None and injector.recovering:
                    # The first success after a fault, with the breaker closed: recovered.
                    injector.recovered(t, breaker is None or breaker.state is closed)

    async def abandon_async(token: Token, key: Any, cost: float) -> None:
        ticket, lease, _, limited, permit = token
        try:
            if lease is not None:
                await lease.__aexit__(None, None, None)
        finally:
            await undo_async(ticket, limited, key, cost, permit)

    return enter_async, leave_async, abandon_async


async def run_async(
    route: Route,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: Any,
    priority: int,
    cost: float,
) -> T:
    """Run ``fn(*args, **kwargs)`` through the route's steps (``fn(connection, *args, ...)``
    when the service has a pool): the body of ``call_async`` and of ``@protected``."""
    steps = route.async_steps
    assert steps is not None
    enter_async, leave_async, abandon_async = steps
    token = await enter_async(key, priority, cost)
    if True:  # ASYNC
        called: Any = UNCALLED  # until fn returns: a TypeError from the await is then ours
    result: T
    # What fn does for this service is this call's work: an instrumented function of the
    # service inside it is not counted again (nor a protected call of it). Marked only for a
    # service that has instrumented functions: the mark costs a context-variable write.
    mark = None
    if route.metrics.instrumented:
        mark = RECORDING.set((*RECORDING.get(), route.metrics))
    try:
        lease = token[1]
        called = fn(lease.connection, *args, **kwargs) if lease is not None else fn(*args, **kwargs)
        if True:  # ASYNC
            result = await called
        else:
            result = called
    except BaseException as exc:
        if mark is not None:
            reset_recording(mark)
        if True:  # ASYNC
            if called is not UNCALLED and not_awaitable(called, exc):
                raise await misused_async(route, fn, called, token, key, cost) from None
        await leave_async(token, exc, NO_RESULT)
        raise
    if mark is not None:
        reset_recording(mark)
    if True:  # ASYNC
        pass
    else:
        if result.__class__ in LAZY:  # its body would run after the protection ended
            await abandon_async(token, key, cost)
            raise lazy_result(route.name, fn, result)
    await leave_async(token, None, result)
    return result


class AsyncProtectionSteps:
    """``async with infra.protect(...)`` (see ``Protection``)."""

    if not TYPE_CHECKING:  # the attributes are Protection's slots; mypy reads them from there
        __slots__ = ()

    _route: Route
    _args: tuple[Any, int, float]  # key, priority, cost
    _token: Token | None
    _recording: Any  # the RECORDING mark while the block runs
    connection: Any
    decision: Decision | None

    async def __aenter__(self) -> Self:
        steps = self._route.async_steps
        assert steps is not None
        token = self._token = await steps[0](*self._args)
        lease = token[1]
        if lease is not None:
            self.connection = lease.connection
        self.decision = token[3]
        metrics = self._route.metrics
        if metrics.instrumented:  # see run_async
            self._recording = RECORDING.set((*RECORDING.get(), metrics))
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> Literal[False]:
        token, self._token = self._token, None
        mark, self._recording = self._recording, None
        if mark is not None:
            reset_recording(mark)
        if token is not None:
            steps = self._route.async_steps
            assert steps is not None
            await steps[1](token, exc_info[1], NO_RESULT)
        return False


# ASYNC: a thread caller's result is never awaited
async def misused_async(
    route: Route, fn: Any, aw: Any, token: Token, key: Any, cost: float
) -> TypeError:
    """End the protection of a ``call_async`` whose function returned ``aw``, which cannot be
    awaited, and say why."""
    steps = route.async_steps
    assert steps is not None
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if aw.__class__ in GENERATORS:  # its body has not run: give everything back
        await steps[2](token, key, cost)
        return lazy_result(route.name, fn, aw)
    # A plain function: it ran and returned, with what the layers gave it; count it so.
    await steps[1](token, None, aw)
    if route.pool is None and route.pool_name is not None:  # an async pool's connection
        fix = "make it `async def` (its connection comes from an async pool)"
    else:
        fix = (
            "make it `async def`, or protect a plain function with call() (or `with "
            f"infra.protect({route.name!r})`)"
        )
    return TypeError(
        f"{name} returned {type(aw).__name__!r}, which call_async() cannot await: it is not a "
        f"coroutine function; {fix}. (It ran, and was counted as a call.)"
    )
