"""Every buttress exception, and a rate limiter's ``Decision``, crosses a process boundary.

A process pool, a task queue with pickled results, multiprocessing: what a worker raises is
pickled there and unpickled here. Each error must arrive as it left, with every public
attribute and the same message; one that does not breaks the pool (``BrokenProcessPool``)
or loses ``retry_after``. The walk over the exception tree finds every class, so a new one
without an example here fails :func:`test_every_exception_class_has_an_example`.

For a queue whose results are JSON (Celery's default), a :class:`~buttress.RejectedError`
turns into plain data and back (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import buttress as bt
import buttress.testing
from buttress.ratelimit._format import UnreadableState

Example = tuple[Callable[[], bt.ButtressError], set[str]]


def refused_by_a_limiter(scopes: tuple[bt.Scope, ...], key: Any) -> bt.RateLimitExceeded:
    """A real refusal: its decision is lazy, holding the limiter's generated functions."""
    limiter = bt.RateLimiter(scopes, clock=bt.ManualClock())
    while limiter.try_acquire(key):
        pass
    try:
        limiter.acquire(key, timeout=0.0)
    except bt.RateLimitExceeded as exc:
        assert exc.decision is not None and exc.decision._details is not None  # its frame
        return exc
    raise AssertionError("the limiter admitted past its limit")


def hierarchical_refusal() -> bt.RateLimitExceeded:
    scopes = (bt.Scope("user", 2, 60.0), bt.Scope("org", 5, 60.0), bt.Scope("global", 9, 60.0))
    return refused_by_a_limiter(scopes, {"user_id": "u1", "org_id": "o1"})


def single_scope_refusal() -> bt.RateLimitExceeded:
    return refused_by_a_limiter((bt.Scope("user", 1, 10.0),), "u1")


def breaker_refusal() -> bt.CircuitOpenError:
    breaker = bt.CircuitBreaker("payments", clock=bt.ManualClock())
    breaker.force_open()
    try:
        breaker.call(lambda: None)
    except bt.CircuitOpenError as exc:
        return exc
    raise AssertionError("a forced-open breaker admitted a call")


def missing_id() -> bt.ContextError:
    limiter = bt.RateLimiter(
        (bt.Scope("user", 2, 60.0), bt.Scope("org", 5, 60.0)), clock=bt.ManualClock()
    )
    try:
        limiter.try_acquire({"user_id": "u1"})
    except bt.ContextError as exc:
        return exc
    raise AssertionError("a context without org_id was accepted")


# Every class, with an example and the public attributes it must carry across.
EXAMPLES: dict[type[bt.ButtressError], Example] = {
    bt.ButtressError: (lambda: bt.ButtressError("something failed"), set()),
    bt.ConfigError: (
        lambda: bt.ConfigError("circuit_breakers.db.window", "must be > 0, got -1"),
        {"path", "message"},
    ),
    bt.ContextError: (missing_id, {"scope", "id_name"}),
    bt.RejectedError: (lambda: bt.RejectedError("busy", retry_after=1.5), {"retry_after"}),
    bt.CircuitOpenError: (breaker_refusal, {"breaker", "state", "retry_after"}),
    bt.LoadShedError: (
        lambda: bt.LoadShedError("degraded", level="heavy", source="payments", retry_after=2.0),
        {"reason", "level", "source", "retry_after"},
    ),
    bt.RateLimitExceeded: (
        hierarchical_refusal,
        {"scope", "key", "limit", "retry_after", "decision"},
    ),
    bt.BulkheadFullError: (
        lambda: bt.BulkheadFullError(
            "search", reason="timeout", limit=20, in_use=20, waiting=50, retry_after=0.25
        ),
        {"bulkhead", "reason", "limit", "in_use", "waiting", "retry_after"},
    ),
    bt.PoolTimeoutError: (
        lambda: bt.PoolTimeoutError(
            "orders_db",
            waited=0.5,
            connect_error=ConnectionRefusedError(111, "Connection refused"),
            message="pool 'orders_db': no connection after 0.500s; connecting fails",
        ),
        {"pool", "waited", "connect_error", "retry_after"},
    ),
    bt.PoolClosedError: (lambda: bt.PoolClosedError("pool 'orders_db' is closed"), set()),
    bt.InfrastructureClosedError: (
        lambda: bt.InfrastructureClosedError("infrastructure 'app' is closed"),
        set(),
    ),
    bt.BackendError: (lambda: bt.BackendError("Redis EVALSHA failed: timeout"), set()),
    UnreadableState: (
        lambda: UnreadableState(
            ["app:api:user@t1:u1", "app:api:global@s1"],
            [0],
            (False, [(1.5,), None], 1.0),
            repaired=True,
        ),
        {"keys", "indexes", "outcome", "repaired"},
    ),
    bt.InjectedFault: (lambda: bt.InjectedFault("injected failure"), set()),
    bt.CallTimeoutError: (lambda: bt.CallTimeoutError("payments", 2.0), {"service", "timeout"}),
    buttress.testing.ScenarioFault: (
        lambda: buttress.testing.ScenarioFault("scenario: dependency failing"),
        set(),
    ),
}


def exception_tree() -> set[type[bt.ButtressError]]:
    """Every exception class buttress defines, found by walking the tree."""
    found: set[type[bt.ButtressError]] = set()
    todo = [bt.ButtressError]
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] == "buttress":
            found.add(cls)
        todo += cls.__subclasses__()
    return found


def decision_fields(d: bt.Decision) -> tuple[Any, ...]:
    return (
        d.allowed,
        d.remaining,
        d.limit,
        d.reset_after,
        d.retry_after,
        d.scope,
        d.key,
        d.index,
        d.scopes,
    )


def public(exc: BaseException) -> dict[str, Any]:
    """An exception's public attributes, comparable across a round trip."""
    out: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if name.startswith("_"):
            continue
        if isinstance(value, bt.Decision):
            value = decision_fields(value)
        elif isinstance(value, BaseException):
            value = (type(value), value.args, public(value))
        out[name] = value
    return out


def assert_same(copy: BaseException, original: BaseException) -> None:
    assert type(copy) is type(original)
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert public(copy) == public(original)


def test_every_exception_class_has_an_example() -> None:
    assert exception_tree() == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_an_exception_pickles_with_every_attribute(
    cls: type[bt.ButtressError], protocol: int
) -> None:
    make, attributes = EXAMPLES[cls]
    exc = make()
    assert type(exc) is cls
    assert set(public(exc)) == attributes
    copy = pickle.loads(pickle.dumps(exc, protocol))
    assert_same(copy, exc)
    with pytest.raises(cls):  # and it raises as itself
        raise copy


def test_a_refusal_keeps_its_numbers_and_its_header_source() -> None:
    for make in (hierarchical_refusal, single_scope_refusal):
        exc = make()
        copy = pickle.loads(pickle.dumps(exc))
        assert copy.retry_after == exc.retry_after and copy.retry_after is not None
        assert copy.decision is not None and exc.decision is not None
        assert copy.decision == exc.decision and hash(copy.decision) == hash(exc.decision)
        assert repr(copy.decision) == repr(exc.decision)
        assert bt.http.rate_limit_headers(copy.decision) == bt.http.rate_limit_headers(exc.decision)


def test_a_decision_pickles_admitted_or_refused_lazy_or_not() -> None:
    clock = bt.ManualClock()
    limiter = bt.RateLimiter((bt.Scope("user", 2, 60.0), bt.Scope("global", 10, 60.0)), clock=clock)
    single = bt.RateLimiter(bt.Scope("user", 1, 60.0), clock=clock)
    decisions = [
        limiter.try_acquire({"user": "u1"}),  # admitted, lazy
        limiter.try_acquire({"user": "u1"}),
        limiter.try_acquire({"user": "u1"}),  # refused, lazy
        single.try_acquire("u1"),
        single.try_acquire("u1"),
        bt.Decision(True, 4, 5.0, 12.0, 0.0, "api", key="k"),  # made directly
    ]
    assert [bool(d) for d in decisions] == [True, True, False, True, False, True]
    for d in decisions:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            copy = pickle.loads(pickle.dumps(d, protocol))
            assert decision_fields(copy) == decision_fields(d)
            assert copy == d and repr(copy) == repr(d)


# -- through a real process pool ------------------------------------------------------------------


def raise_example(name: str) -> None:
    """Run in the worker: make the example there and raise it."""
    classes = {cls.__qualname__: cls for cls in EXAMPLES}
    raise EXAMPLES[classes[name]][0]()


def test_an_exception_raised_in_a_worker_process_arrives_intact() -> None:
    # spawn: the worker is a fresh interpreter that imports buttress itself, as a pool of a
    # server's or a task queue's would; nothing is shared with this process but the pickle.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        futures = {cls: pool.submit(raise_example, cls.__qualname__) for cls in EXAMPLES}
        for cls, future in futures.items():
            error = future.exception(timeout=60)
            assert error is not None
            assert_same(error, EXAMPLES[cls][0]())
        assert pool.submit(len, "alive").result(timeout=60) == 5  # the pool is not broken


# -- plain data, for JSON results ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [c for c in EXAMPLES if issubclass(c, bt.RejectedError)], ids=lambda c: c.__name__
)
def test_a_refusal_becomes_json_and_back(cls: type[bt.RejectedError]) -> None:
    exc = EXAMPLES[cls][0]()
    data = json.loads(json.dumps(exc.to_dict()))
    assert data["error"] == cls.__name__
    assert data["message"] == str(exc)
    assert data["retry_after"] == exc.retry_after
    again = bt.RejectedError.from_dict(data)
    assert type(again) is cls
    assert str(again) == str(exc) and again.args == exc.args
    for name, value in public(exc).items():
        plain = value is None or type(value) in (str, int, float, bool)
        assert getattr(again, name) == (value if plain else None), name
    assert cls.from_dict(data).to_dict() == exc.to_dict()


def test_from_dict_refuses_what_it_cannot_make() -> None:
    with pytest.raises(ValueError, match="'error' must name RejectedError or a subclass"):
        bt.RejectedError.from_dict({"error": "ConfigError", "message": "x"})
    with pytest.raises(ValueError, match="must name CircuitOpenError"):
        bt.CircuitOpenError.from_dict({"error": "RateLimitExceeded", "message": "x"})
    with pytest.raises(ValueError, match="got None"):
        bt.RejectedError.from_dict({"message": "x"})
    bare = bt.RejectedError.from_dict({"error": "CircuitOpenError", "message": "circuit"})
    assert isinstance(bare, bt.CircuitOpenError) and bare.retry_after is None
    odd = bt.RejectedError.from_dict(
        {"error": "RejectedError", "message": "m", "to_dict": 1, "__class__": 2, "args": 3}
    )
    assert type(odd) is bt.RejectedError and odd.args == ("m",)
    assert odd.to_dict() == {"error": "RejectedError", "message": "m", "retry_after": None}
