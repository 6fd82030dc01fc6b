"""Celery tasks protected by buttress (the ``celery`` extra). See
docs/integrations/celery.md.

* :class:`ProtectedTask`: a task base class. Each run goes through
  ``Infrastructure.call(service, ...)`` (rate limit, breaker, pool, timeout, an in-process
  :class:`~buttress.Retry` if given); a :class:`~buttress.RejectedError` (the run was refused
  before it started) becomes ``self.retry(countdown=retry_after)``, bounded by the task's
  ``max_retries``. A refusal that says nothing about when (``retry_after`` ``None``, or
  infinite: a cost above the limit) is raised as it is: waiting will not help.
* :class:`WorkerInfrastructure`: the :class:`~buttress.Infrastructure` of each worker
  process, built lazily at its first use in that process.

Why lazily rather than on ``worker_process_init``: that signal fires only in prefork
children, within a short time limit (``worker_proc_alive_timeout``, 4 s), while a lazy build
serves every pool (prefork, threads, solo, gevent), eager mode and code outside tasks alike, and
waits for nothing until a task needs it. The process id is checked at each use, so a process
forked after the parent built one (``worker_max_tasks_per_child`` replacing a child, a task
that forks) builds its own instead of using the copy. Each process closes its own at
``worker_process_shutdown`` (a prefork child) or ``worker_shutdown`` (the worker's main
process).
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject
from celery.exceptions import Retry as CeleryRetry
from celery.signals import worker_process_shutdown, worker_shutdown

from .._errors import RejectedError
from .._fork import fork_safe_lock
from .._infrastructure import Infrastructure
from .._retry import Retry

__all__ = ["ProtectedTask", "WorkerInfrastructure"]


class WorkerInfrastructure:
    """The :class:`~buttress.Infrastructure` ``build()`` makes, one per process, made at the
    first :meth:`get` in that process and closed when the worker process shuts down (see the
    module docstring for why lazily)::

        infra = WorkerInfrastructure(lambda: bt.Infrastructure("shop", "buttress.toml"))
    """

    __slots__ = ("__weakref__", "_build", "_built", "_lock", "_pid")

    def __init__(self, build: Callable[[], Infrastructure]) -> None:
        if not callable(build):
            raise TypeError(
                f"WorkerInfrastructure(build): build makes an Infrastructure, e.g. "
                f"lambda: bt.Infrastructure('shop', 'buttress.toml'); got {build!r}"
            )
        self._build = build
        self._lock = fork_safe_lock()
        self._built: Infrastructure | None = None
        self._pid = 0
        _everywhere.add(self)

    def __repr__(self) -> str:
        state = "built" if self._built is not None and self._pid == os.getpid() else "not built"
        return f"WorkerInfrastructure({self._build!r}, {state} in process {os.getpid()})"

    def get(self) -> Infrastructure:
        """This process's infrastructure, built now if it has none yet."""
        pid = os.getpid()
        built = self._built
        if built is not None and self._pid == pid:
            return built
        with self._lock:  # two threads of one worker (the threads pool) build one
            if self._built is None or self._pid != pid:
                made = self._build()
                if not isinstance(made, Infrastructure):
                    raise TypeError(
                        f"WorkerInfrastructure: build() must return a buttress.Infrastructure, "
                        f"got {made!r}"
                    )
                # A copy the parent built is left alone: closing it here would close what the
                # parent still uses; buttress already let its connections go at the fork.
                self._built, self._pid = made, pid
            return self._built

    def close(self) -> None:
        """Close this process's infrastructure, if it built one (a worker's shutdown does)."""
        with self._lock:
            built, self._built = self._built, None
            mine = self._pid == os.getpid()
        if built is not None and mine:
            built.close()


# Held weakly: a holder nobody keeps has nothing left to close.
_everywhere: weakref.WeakSet[WorkerInfrastructure] = weakref.WeakSet()


def _close_all(**_: Any) -> None:
    for holder in list(_everywhere):  # a copy: a holder may go while this runs
        holder.close()


worker_process_shutdown.connect(_close_all, weak=False)
worker_shutdown.connect(_close_all, weak=False)


class ProtectedTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """A task whose runs go through buttress. Set its options as ``app.task`` keywords::

        @app.task(base=ProtectedTask, infrastructure=infra, service="payments",
                  context=lambda order_id, user_id: {"user_id": user_id}, max_retries=5)
        def charge(order_id, user_id): ...

    * ``infrastructure``: a :class:`WorkerInfrastructure` (one per worker process) or an
      :class:`~buttress.Infrastructure`.
    * ``service``: the service the run is protected as (default: the task's name).
    * ``rate_key`` / ``context``: the run's id or scope context for the service's limiter, or
      callables given the task's arguments that return them.
    * ``call_retry``: a :class:`~buttress.Retry` run inside the worker around the call (each
      attempt through the breaker); what it gives up on propagates, and a refusal it gives up
      on still becomes a Celery retry.
    * ``retry_refused`` (``True``): whether a refusal becomes ``self.retry``.

    Celery's own control flow raised by the task (its ``self.retry()``, ``Ignore``,
    ``Reject``) passes through: no failure for the breaker, never retried by ``call_retry``.

    When the service has a pool, its connection is passed to the task first
    (``def task(conn, ...)``, or ``def task(self, conn, ...)`` with ``bind=True``), as
    ``Infrastructure.call`` passes it.
    """

    infrastructure: WorkerInfrastructure | Infrastructure | None = None
    service: str | None = None
    rate_key: Any = None
    context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None
    call_retry: Retry | None = None
    retry_refused: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        infra = self._infrastructure()
        # Read from the class: a function set there by app.task(...) is no method of the task.
        options = type(self)
        rate_key, context = options.rate_key, options.context
        if callable(rate_key):
            rate_key = rate_key(*args, **kwargs)
        if callable(context):
            context = context(*args, **kwargs)
        run = super().__call__

        # The task's own arguments are closed over, never passed through call(): a task
        # argument named `context` or `timeout` must reach the task, not the pipeline.
        def body(*connection: Any) -> Any:
            try:
                return run(*connection, *args, **kwargs)
            except _CONTROL_FLOW as exc:
                # Celery's own control flow (the task's self.retry(), Ignore, Reject) is no
                # failure of the service, and no call_retry may run the task again for it.
                return _Passed(exc)

        try:
            result = infra.call(
                self.service or self.name,
                body,
                rate_key=rate_key,
                context=context,
                retry=self.call_retry,
            )
        except RejectedError as exc:
            countdown = _countdown(exc)
            if not self.retry_refused or countdown is None:
                raise
            # Past max_retries Celery raises `exc` itself: the task fails with the refusal.
            raise self.retry(exc=exc, countdown=countdown) from exc
        if isinstance(result, _Passed):
            raise result.exc
        return result

    def _infrastructure(self) -> Infrastructure:
        held = self.infrastructure
        if isinstance(held, WorkerInfrastructure):
            return held.get()
        if isinstance(held, Infrastructure):
            return held
        raise TypeError(
            f"task {self.name!r}: ProtectedTask needs infrastructure= (a "
            f"buttress.integrations.celery.WorkerInfrastructure or a buttress.Infrastructure), "
            f"got {held!r}"
        )


_CONTROL_FLOW = (CeleryRetry, Ignore, Reject)


class _Passed:
    """A control-flow exception the task raised, carried past the pipeline to be raised after."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _countdown(exc: RejectedError) -> float | None:
    """The seconds to wait before running a refused task again, or ``None``: never (the
    refusal does not say when, or it never will: a cost above the limit)."""
    after = exc.retry_after
    if after is None or not math.isfinite(after):
        return None
    return max(0.0, float(after))
