"""Celery tasks protected by buttress (buttress/integrations/celery.py), run by real Celery
workers: celery's in-process worker thread on the in-memory broker, and a `celery worker`
process with a prefork pool on the filesystem transport; eager mode only for what needs no
worker."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from celery import Celery  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402
from celery.signals import task_retry  # noqa: E402

import buttress as bt  # noqa: E402
from buttress import events  # noqa: E402
from buttress.integrations.celery import ProtectedTask, WorkerInfrastructure  # noqa: E402

RESULT_TIMEOUT = 30.0  # a bound on a real worker's answer; reached only when something broke


def _app(name: str) -> Celery:
    app = Celery(name, broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        # The in-memory transport polls its queue; every second by default.
        broker_transport_options={"polling_interval": 0.01},
        result_serializer="pickle",  # a refusal arrives with its attributes
        accept_content=["json", "pickle"],
        worker_hijack_root_logger=False,
    )
    return app


@pytest.fixture
def app() -> Iterator[Celery]:
    app = _app("buttress-test")
    with _logging_restored():
        yield app
    app.close()


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """A worker sets up logging for its process even when told not to hijack the root
    logger (the root's level becomes ERROR, with a stderr handler): put it back, or later tests
    that capture WARNING records would see none."""
    loggers = [logging.root] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.propagate, lg.disabled, list(lg.handlers)) for lg in loggers]
    try:
        yield
    finally:
        for lg, level, propagate, disabled, handlers in saved:
            lg.setLevel(level)
            lg.propagate, lg.disabled, lg.handlers[:] = propagate, disabled, handlers


def test_a_refused_task_is_run_again_after_retry_after_by_a_real_worker_and_succeeds(
    app: Celery,
) -> None:
    infra = bt.Infrastructure(
        "celery1",
        {"rate_limiting": {"limiters": {"send": {"limit": 1, "window": 0.5}}}},
        background=False,
    )
    denied: list[tuple[float, float]] = []  # (when, retry_after)
    ran: list[tuple[int, float, int]] = []  # (n, when, retries)

    def on_denied(_name: Any, measurements: Any, _metadata: Any) -> None:
        denied.append((time.monotonic(), measurements["retry_after"]))

    @app.task(base=ProtectedTask, bind=True, infrastructure=infra, service="send", max_retries=3)
    def send(self: Any, n: int) -> int:
        ran.append((n, time.monotonic(), self.request.retries))
        return n * 10

    events.attach("test-celery-denied", ("buttress", "rate_limiter", "denied"), on_denied)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            first, second = send.delay(1), send.delay(2)
            assert first.get(timeout=RESULT_TIMEOUT) == 10
            assert second.get(timeout=RESULT_TIMEOUT) == 20
    finally:
        events.detach("test-celery-denied")
        infra.close()

    # The second was refused once, went back to the broker, and ran when the limit had room.
    assert len(denied) == 1
    refused_at, retry_after = denied[0]
    assert 0 < retry_after <= 0.5
    assert [(n, retries) for n, _, retries in ran] == [(1, 0), (2, 1)]
    # Celery's ETA is wall-clock, ours monotonic: a millisecond either way.
    assert ran[1][1] >= refused_at + retry_after - 0.005


def test_a_protected_task_opens_its_breaker_in_a_real_worker_and_is_then_refused_into_a_retry(
    app: Celery,
) -> None:
    infra = bt.Infrastructure(
        "celery2",
        {
            "circuit_breakers": {
                "mailer": {"strategy": "fail_fast", "failure_threshold": 3, "reset_timeout": 60.0}
            }
        },
        background=False,
    )
    bodies: list[int] = []
    retried = threading.Event()
    retries: list[tuple[str, float | None]] = []

    def on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
        retries.append((type(reason.exc).__name__ if hasattr(reason, "exc") else "", None))
        retried.set()

    @app.task(base=ProtectedTask, infrastructure=infra, service="mailer", max_retries=2)
    def mail(n: int) -> None:
        bodies.append(n)
        raise ConnectionError("smtp down")

    task_retry.connect(on_retry, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            for n in range(3):
                failed = mail.delay(n)
                with pytest.raises(ConnectionError):  # a failure is no refusal: no retry
                    failed.get(timeout=RESULT_TIMEOUT)
            assert infra.breakers["mailer"].state == "open"
            refused = mail.delay(3)
            assert retried.wait(RESULT_TIMEOUT)
            assert refused.state == "RETRY"
    finally:
        task_retry.disconnect(on_retry)
        infra.close()

    assert bodies == [0, 1, 2]  # the refused task never ran its body
    assert retries == [("CircuitOpenError", None)]


def test_retries_are_bounded_by_max_retries_then_the_refusal_is_the_tasks_failure(
    app: Celery,
) -> None:
    app.conf.task_always_eager = True  # eager mode runs a retry at once: no worker needed here
    infra = bt.Infrastructure(
        "celery3",
        {"rate_limiting": {"limiters": {"quota": {"limit": 1, "window": 3600.0}}}},
        background=False,
    )
    runs: list[int] = []

    @app.task(base=ProtectedTask, infrastructure=infra, service="quota", max_retries=2)
    def job() -> str:
        runs.append(1)
        return "done"

    try:
        assert job.delay().get() == "done"
        result = job.delay()  # refused, retried twice (refused each time), then failed
        with pytest.raises(bt.RateLimitExceeded) as info:
            result.get()
    finally:
        infra.close()
    assert runs == [1]
    assert info.value.retry_after is not None and info.value.retry_after > 3000


def test_a_refusal_that_says_nothing_about_when_is_not_retried(app: Celery) -> None:
    app.conf.task_always_eager = True
    infra = bt.Infrastructure("celery4", {"circuit_breakers": {"lookup": {}}}, background=False)
    attempts: list[int] = []

    # The service is the task's name when none is given.
    @app.task(base=ProtectedTask, bind=True, infrastructure=infra, name="lookup", max_retries=5)
    def lookup(self: Any) -> None:
        attempts.append(self.request.retries)
        raise bt.CircuitOpenError("upstream", "open", retry_after=None)

    try:
        with pytest.raises(bt.CircuitOpenError):
            lookup.delay().get()
    finally:
        infra.close()
    assert attempts == [0]


def test_context_comes_from_the_tasks_arguments_and_a_task_argument_named_context_reaches_it(
    app: Celery,
) -> None:
    app.conf.task_always_eager = True
    infra = bt.Infrastructure(
        "celery5",
        {
            "rate_limiting": {
                "limiters": {"api": {"scopes": [{"name": "user", "limit": 1, "window": 60.0}]}}
            }
        },
        background=False,
    )

    @app.task(
        base=ProtectedTask,
        infrastructure=infra,
        service="api",
        rate_key=lambda user, context: user,
        retry_refused=False,
    )
    def work(user: str, context: str) -> str:
        return f"{user}:{context}"

    try:
        assert work.delay("ann", "a").get() == "ann:a"
        assert work.delay("bob", "b").get() == "bob:b"  # another user: another allowance
        with pytest.raises(bt.RateLimitExceeded):
            work.delay("ann", "c").get()
    finally:
        infra.close()


def test_the_tasks_own_self_retry_passes_through_call_retry_and_the_breaker(
    app: Celery,
) -> None:
    app.conf.task_always_eager = True
    infra = bt.Infrastructure(
        "celery7", {"circuit_breakers": {"svc": {"consecutive_failure_threshold": 1}}}, env={}
    )
    runs: list[int] = []

    @app.task(
        base=ProtectedTask,
        bind=True,
        infrastructure=infra,
        service="svc",
        call_retry=bt.Retry(attempts=3, clock=bt.ManualClock(), seed=1),
        max_retries=1,
    )
    def once_again(self: Any) -> str:
        runs.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return "ok"

    try:
        once_again.apply()  # eager: the retry runs at once, inside the first run's self.retry
        assert runs == [0, 1]  # the in-process Retry did not run the task again for it
        assert infra.breakers["svc"].state == "closed"  # and the breaker saw no failure
    finally:
        infra.close()


def test_worker_infrastructure_is_built_once_per_process_and_again_in_a_forked_child() -> None:
    built: list[int] = []

    def build() -> bt.Infrastructure:
        built.append(os.getpid())
        return bt.Infrastructure("celery6", {}, background=False)

    holder = WorkerInfrastructure(build)
    first = holder.get()
    assert holder.get() is first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new one of its own, not the parent's copy
        try:
            child = holder.get()
            ok = child is not first and built[-1] == os.getpid() and len(built) == 2
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert built == [os.getpid()]
    holder.close()
    assert first.closed


def test_bad_settings_are_named() -> None:
    with pytest.raises(TypeError, match="build makes an Infrastructure"):
        WorkerInfrastructure("shop")  # type: ignore[arg-type]
    holder = WorkerInfrastructure(lambda: "not one")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"must return a buttress\.Infrastructure"):
        holder.get()
    app = _app("bad")
    app.conf.task_always_eager = True

    @app.task(base=ProtectedTask)
    def orphan() -> None:
        pass

    with pytest.raises(TypeError, match="needs infrastructure="):
        orphan.delay().get()
    app.close()


PREFORK_TASKS = textwrap.dedent(
    """
    import os
    import time

    import buttress as bt
    from celery import Celery
    from buttress.integrations.celery import ProtectedTask, WorkerInfrastructure

    HERE = os.path.dirname(os.path.abspath(__file__))
    app = Celery("pf", broker="filesystem://", backend=f"file://{HERE}/results")
    app.conf.broker_transport_options = {
        "data_folder_in": f"{HERE}/queue",
        "data_folder_out": f"{HERE}/queue",
        "polling_interval": 0.05,
    }
    BUILT = []  # the processes that built an Infrastructure, as each process sees it


    def build():
        BUILT.append(os.getpid())
        limiter = {"limit": 5, "window": 86400.0, "backend": f"sqlite:///{HERE}/limits.db"}
        return bt.Infrastructure("pf", {"rate_limiting": {"limiters": {"api": limiter}}}, env={})


    infra = WorkerInfrastructure(build)  # made in the worker's main process, built in none


    @app.task(base=ProtectedTask, infrastructure=infra, service="api", max_retries=0)
    def which():
        time.sleep(0.2)  # real-time: keeps one child busy, so that the other takes tasks too
        return [os.getpid(), BUILT]
    """
)


@pytest.mark.slow
def test_under_prefork_each_child_builds_its_own_infrastructure_and_one_limit_holds(
    tmp_path: Path,
) -> None:
    """A real `celery worker --pool prefork` process with two children, on the filesystem
    transport: each child builds its Infrastructure at its first task (the main process never
    does), and their one limit on SQLite admits exactly 5 of 12 tasks; the rest are refused,
    and with max_retries=0 fail with the refusal."""
    (tmp_path / "pf_tasks.py").write_text(PREFORK_TASKS)
    for folder in ("queue", "results"):
        (tmp_path / folder).mkdir()
    client = Celery("pf", broker="filesystem://", backend=f"file://{tmp_path}/results")
    client.conf.broker_transport_options = {
        "data_folder_in": f"{tmp_path}/queue",
        "data_folder_out": f"{tmp_path}/queue",
    }
    args = [sys.executable, "-m", "celery", "-A", "pf_tasks", "worker", "--pool", "prefork"]
    args += ["--concurrency", "2", "--loglevel", "warning"]
    args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    worker = subprocess.Popen(
        args,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        results = [client.send_task("pf_tasks.which") for _ in range(12)]
        outcomes = [r.get(timeout=60, propagate=False, interval=0.05) for r in results]
        states = [r.state for r in results]
    finally:
        worker.terminate()  # a warm shutdown: children close their Infrastructure
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        client.close()

    admitted = [
        (o[0], tuple(o[1])) for o, s in zip(outcomes, states, strict=True) if s == "SUCCESS"
    ]
    assert len(admitted) == 5, states
    assert states.count("FAILURE") == 7
    refusals = [o for o in outcomes if isinstance(o, Exception)]
    assert {type(o).__name__ for o in refusals} == {"RateLimitExceeded"}
    children = {pid for pid, _ in admitted}
    assert worker.pid not in children
    # Each child built exactly one, itself: nothing was built in the main process and copied.
    assert all(built == (pid,) for pid, built in admitted), admitted
    assert len(children) == 2, admitted
