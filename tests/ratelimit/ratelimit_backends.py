"""Helpers for the persistent backends' tests: backends by name, a private redis-server, and the
worker functions the multi-process tests run (importable, so ``spawn`` children can run them)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import buttress as bt
from servers import RedisClusterOfOurOwn, RedisServer, free_port, wait_until

__all__ = [
    "RedisClusterOfOurOwn",
    "RedisServer",
    "close_backend",
    "free_port",
    "make_backend",
    "unique_prefix",
    "wait_until",
]


def unique_prefix(label: str) -> str:
    """A Redis key prefix no other test (or other run on a shared server) uses."""
    return f"bt-test:{label}:{uuid.uuid4().hex[:12]}:"


def make_backend(kind: str, target: str, prefix: str = "", **options: Any) -> Any:
    """``memory``, ``sqlite`` (``target`` is the file) or ``redis`` (``target`` is the URL)."""
    if kind == "memory":
        return bt.MemoryBackend()
    if kind == "sqlite":
        return bt.SQLiteBackend(target, **options)
    if kind == "redis":
        return bt.RedisBackend(target, prefix=prefix, **options)
    raise ValueError(kind)


def close_backend(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()


# -- multi-process workers ---------------------------------------------------------------------

HAMMER_SCOPES = (
    # Windows far longer than the test: nothing refills, so the allowance is exactly the limit.
    ("user", 80, "token_bucket"),  # 4 users x 80 = 320
    ("org", 200, "fixed_window"),  # the tightest: one org for everyone
    ("global", 260, "sliding_window"),
)
HAMMER_WINDOW = 1e6


def hammer_limiter(backend: Any, lease: bt.Leasing | None = None) -> bt.RateLimiter:
    return bt.RateLimiter(
        [
            bt.Scope(name, limit, HAMMER_WINDOW, algorithm=algorithm)  # type: ignore[arg-type]
            for name, limit, algorithm in HAMMER_SCOPES
        ],
        backend=backend,
        namespace="hammer",
        failure_policy="fail_closed",  # an error must fail the test, never admit silently
        lease=lease,
    )


def hammer(
    kind: str,
    target: str,
    prefix: str,
    user: str,
    start: Any,
    seconds: float,
    results: Any,
    lease: int = 0,
) -> None:
    """Decide as fast as possible for ``seconds`` (all workers start together); report counts.
    ``lease``: the size of the slices this worker takes (0: none), given back at the end."""
    backend = make_backend(kind, target, prefix, timeout=5.0)
    limiter = hammer_limiter(backend, bt.Leasing(size=lease, ttl=0.2) if lease else None)
    context = {"user": user, "org": "o1"}
    admitted = attempts = 0
    try:
        start.wait()
        deadline = time.monotonic() + seconds  # real-time: the issue asks for seconds of load
        while time.monotonic() < deadline:
            admitted += limiter.try_acquire(context).allowed
            attempts += 1
        limiter.release_leases()
        results.put((user, admitted, attempts, None))
    except BaseException as exc:  # report, so the test fails with the reason
        results.put((user, admitted, attempts, repr(exc)))
    finally:
        close_backend(backend)


def hammer_concurrently(
    mode: str, target: str, prefix: str, users: list[str], start: Any, seconds: float, results: Any
) -> None:
    """:func:`hammer` on Redis with concurrent callers in this process, whose decisions go
    out batched: one asyncio task per user (``mode="tasks"``) or one thread per user
    (``"threads"``). Reports ``(admitted by user, attempts, script calls per decision...)``."""
    import asyncio

    backend = make_backend("redis", target, prefix, timeout=5.0)
    limiter = hammer_limiter(backend)
    admitted = dict.fromkeys(users, 0)
    attempts = 0
    try:
        start.wait()
        deadline = time.monotonic() + seconds  # real-time: seconds of load, as hammer
        if mode == "tasks":

            async def one(user: str) -> int:
                n = 0
                context = {"user": user, "org": "o1"}
                while time.monotonic() < deadline:
                    admitted[user] += (await limiter.try_acquire_async(context)).allowed
                    n += 1
                return n

            async def every() -> list[int]:
                return await asyncio.gather(*(one(u) for u in users))

            attempts = sum(asyncio.run(every()))
        else:
            counts = [0] * len(users)

            def run(i: int) -> None:
                context = {"user": users[i], "org": "o1"}
                while time.monotonic() < deadline:
                    admitted[users[i]] += limiter.try_acquire(context).allowed
                    counts[i] += 1

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(users))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            attempts = sum(counts)
        results.put((admitted, attempts, None))
    except BaseException as exc:  # report, so the test fails with the reason
        results.put((admitted, attempts, repr(exc)))
    finally:
        close_backend(backend)


def hammer_threads(
    limiter: bt.RateLimiter, contexts: list[dict[str, str]], attempts: int
) -> list[int]:
    """One thread per context, all starting together; returns how many each had admitted."""
    admitted = [0] * len(contexts)
    start = threading.Barrier(len(contexts))

    def run(i: int) -> None:
        start.wait()
        for _ in range(attempts):
            admitted[i] += limiter.try_acquire(contexts[i]).allowed

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(contexts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted


def restart_limiter(backend: Any) -> bt.RateLimiter:
    return bt.RateLimiter(
        [bt.Scope("user", 10, 1e6), bt.Scope("global", 100, 1e6, algorithm="sliding_window")],
        backend=backend,
        namespace="restart",
        failure_policy="fail_closed",
    )


KILL_LIMIT = 40  # per one-second fixed window, for every worker together
KILL_WINDOW = 1.0


class DecisionClock(bt.SystemClock):
    """The real clock, remembering the last wall time read: a decision's own time (its
    backend reads it last, under the write lock), whose window the decision was charged to."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0.0

    def time(self) -> float:  # type: ignore[override]
        self.last = now = time.time()
        return now


def admit_until_killed(target: str, log: str) -> None:
    """Decide as fast as possible until killed (``kill -9``); append to ``log`` the window of
    each admission (the end of its one-second window, a whole second) as soon as it returns."""
    clock = DecisionClock()
    backend = bt.SQLiteBackend(target, timeout=60.0)  # a slow host waits; it never fails open
    limiter = bt.RateLimiter(
        [bt.Scope("user", KILL_LIMIT, KILL_WINDOW, algorithm="fixed_window")],
        backend=backend,
        clock=clock,
        namespace="kill",
        failure_policy="fail_closed",  # an error must never admit
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    decided = 0
    while True:
        try:
            admitted = limiter.try_acquire("u").allowed
        except bt.BackendError:
            continue
        if admitted:  # one small O_APPEND write: whole, even with other writers
            os.write(fd, b"%d\n" % int(clock.last // KILL_WINDOW + 1))
        decided += 1
        if decided % 32 == 0:
            limiter.maintain()  # the sweep a scheduler runs, much more often


def across_deletion(target: str, before: int, after: int, go: Any, results: Any) -> None:
    """Try ``before`` decisions, report; once ``go`` is set (the file is gone meanwhile), try
    ``after`` more; report them, how often this process saw its file replaced, and errors."""
    replaced: list[object] = []
    bt.events.attach(
        "test.replaced",
        ("buttress", "rate_limiter", "backend_file_replaced"),
        lambda *event: replaced.append(event),
    )
    try:
        backend = bt.SQLiteBackend(target, timeout=30.0)
    except bt.ConfigError as exc:  # reported, so the test fails with the reason
        results.put(repr(exc))
        return
    limiter = bt.RateLimiter(
        [bt.Scope("user", 100, 1e6, algorithm="token_bucket")],  # nothing refills meanwhile
        backend=backend,
        namespace="deleted",
        failure_policy="fail_closed",
    )
    try:
        results.put(sum(limiter.try_acquire("u").allowed for _ in range(before)))
        go.wait()
        admitted, errors = 0, []
        for _ in range(after):
            try:
                admitted += limiter.try_acquire("u").allowed
            except bt.BackendError as exc:
                errors.append(str(exc))
        results.put((admitted, len(replaced), errors[:3]))
    finally:
        backend.close()


def spend(kind: str, target: str, prefix: str, attempts: int, results: Any) -> None:
    """Try ``attempts`` decisions in a fresh process; report admitted and what is left."""
    backend = make_backend(kind, target, prefix)
    try:
        limiter = restart_limiter(backend)
        admitted = sum(limiter.try_acquire("u1").allowed for _ in range(attempts))
        results.put((admitted, limiter.peek("u1").remaining))
    finally:
        close_backend(backend)
