"""What a limiter does when its backend fails: the failure policy and the outage's bookkeeping.

A backend raises :class:`~buttress.BackendError` when it cannot answer (Redis unreachable or too
slow, SQLite locked past its timeout). The limiter then follows its ``failure_policy``:

* ``fail_open``: the request is admitted, as if every scope had room (the service keeps
  serving; limits are not enforced while the backend is down);
* ``fail_closed``: :class:`~buttress.BackendError` is raised to the caller (nothing is admitted
  that could not be counted);
* ``local``: decided in this process's memory, each scope at ``local_share`` of its limit
  (``_local.py``); the local states are dropped when the backend answers again.

While the backend is down, the limiter calls it at most once per ``retry_interval`` seconds
(the first call after that is the probe); the other decisions follow the policy at once instead
of each waiting for a timeout. The first answer to a call that writes (a decision, a refund)
ends the outage: no restart needed. A read alone (a peek) ends none: a backend may answer reads
while it cannot write (a SQLite file that is read-only, or locked by another process: WAL
readers never wait), and the outage would flap. :meth:`GuardedBackend.check` (what
``RateLimiter.check_backend`` asks) ends it when the backend proves it can write
(``check_write``, an optional backend method).

An outage is announced once when it starts and once when it ends, never per decision: the
``backend_down`` and ``backend_recovered`` events, and a WARNING record each on the
``buttress.rate_limiter`` logger, with the fields of ``_logging.log_fields``. Both are WARNING:
whoever sees an outage begin at the default level must see it end.

A state the backend cannot read (:class:`~._format.UnreadableState`: one key's stored value is
not a state of its algorithm) is no outage: the backend answered. It is counted
(``BackendHealth.unreadable``, the ``state_unreadable`` event and a WARNING record per key) and
the decision the backend made with a spent state in its place is the answer; only if it could
make none does the policy decide, for that one request, without starting an outage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

from .. import events
from .._errors import BackendError, ConfigError
from .._fork import fork_safe_lock
from .._logging import log_fields
from .._redact import redacted_logger
from .._validate import in_interval
from ._algorithms import Algorithm
from ._backend import Backend, Outcome, TimeBase
from ._format import UnreadableState, scope_and_id
from ._guarded import GuardedCalls
from ._guarded_async import AsyncGuardedCalls
from ._local import LocalDecisions

__all__ = ["FAILURE_POLICIES", "BackendHealth", "FailurePolicy", "GuardedBackend", "Unanswered"]


class Unanswered(tuple[None, ...]):
    """The states of a decision the failure policy made, not the backend: none was read (a
    lease is never taken on one: the backend granted nothing)."""

    __slots__ = ()


FailurePolicy: TypeAlias = Literal["fail_open", "fail_closed", "local"]
FAILURE_POLICIES: tuple[FailurePolicy, ...] = ("fail_open", "fail_closed", "local")


class BackendHealth:
    """One limiter's view of its backend: up, or down since when (times on the monotonic clock)."""

    __slots__ = (
        "down",
        "down_since",
        "errors",
        "last_error",
        "policy",
        "retry_at",
        "retry_interval",
        "unreadable",
    )

    def __init__(self, policy: FailurePolicy, retry_interval: float) -> None:
        if policy not in FAILURE_POLICIES:
            raise ConfigError(
                "failure_policy",
                f"must be 'fail_open', 'fail_closed' or 'local', got {policy!r}",
            )
        self.policy: FailurePolicy = policy
        # Finite: a backend that is down must be tried again some time.
        self.retry_interval = in_interval("backend_retry_interval", retry_interval, "[0, inf)")
        self.down = False
        self.down_since = 0.0
        self.retry_at = 0.0
        self.errors = 0
        self.last_error = ""
        self.unreadable = 0  # states found unreadable (never an outage)

    def skip(self, now: float, probe: bool = True) -> bool:
        """Whether to spare the backend this call (it is down and no retry is due yet).

        A call that can end the outage (``probe``) takes the retry: the others keep skipping
        for ``retry_interval``. A read-only call may look when a retry is due but leaves it
        to the next write, since its success proves nothing about writing.
        """
        if not self.down or now >= self.retry_at:
            if self.down and probe:
                self.retry_at = now + self.retry_interval
            return False
        return True

    def failed(self, now: float, error: BaseException) -> bool:
        """A call failed; returns True when this starts an outage."""
        self.errors += 1
        self.last_error = str(error)
        self.retry_at = now + self.retry_interval
        if self.down:
            return False
        self.down, self.down_since = True, now
        return True

    def answered(self, now: float) -> float:
        """A call succeeded while down: the outage is over; returns how long it lasted."""
        self.down = False
        return now - self.down_since

    def down_for(self, now: float) -> float | None:
        """How long the outage under way has lasted at ``now``; ``None`` while up."""
        return max(0.0, now - self.down_since) if self.down else None

    @property
    def status(self) -> str:
        return "down" if self.down else "ok"

    @property
    def mode(self) -> str:
        """Who decides now: ``"backend"``, or while it is down the policy (``"local"``:
        this process's memory; ``"fail_open"``, ``"fail_closed"``: nobody)."""
        return self.policy if self.down else "backend"


EV_DOWN = ("buttress", "rate_limiter", "backend_down")
EV_RECOVERED = ("buttress", "rate_limiter", "backend_recovered")
EV_UNREADABLE = ("buttress", "rate_limiter", "state_unreadable")

_log = redacted_logger("buttress.rate_limiter")

# What decisions do during an outage, in the words of its log record.
MEANWHILE: dict[FailurePolicy, str] = {
    "fail_open": "admitting every request unchecked (fail_open)",
    "fail_closed": "refusing every request with BackendError (fail_closed)",
    "local": "deciding in this process's memory at {share} of each limit (local)",
}


class BackendGuard:
    """The policy half of :class:`GuardedBackend`: the outage's bookkeeping and its events."""

    __slots__ = ("_lock", "_meta", "_monotonic", "backend", "health", "local")

    def __init__(
        self,
        backend: Backend,
        health: BackendHealth,
        monotonic: Callable[[], float],
        *,
        limiter: str,
        namespace: str,
        local_share: float = 1.0,
    ) -> None:
        self.backend = backend
        self.health = health
        # failure_policy="local": where decisions go while the backend is down.
        self.local = LocalDecisions(local_share) if health.policy == "local" else None
        self._monotonic = monotonic
        self._lock = fork_safe_lock()  # outage transitions only; never held over I/O
        self._meta = {
            "limiter": limiter,
            "namespace": namespace,
            "backend": type(backend).__name__,
            "policy": health.policy,
        }

    @property
    def time_base(self) -> TimeBase:
        return self.backend.time_base

    # -- the policy ----------------------------------------------------------------------------

    def _spared(self, probe: bool = True) -> bool:
        health = self.health
        return health.down and health.skip(self._monotonic(), probe)

    def _unanswered(self, error: BackendError | None) -> None:
        """The backend failed (``error``) or is spared during an outage: raise if fail_closed."""
        health = self.health
        if error is not None:
            self._failed(error)
        if health.policy == "fail_closed":
            raise BackendError(
                f"rate limiter {self._meta['namespace']}:{self._meta['limiter']}: "
                f"{self._meta['backend']} is down ({health.last_error})"
            ) from error

    def _failed(self, error: BaseException) -> None:
        """Record a failed call: the start of an outage (announced: its event and its one
        log record) or one more failure in the outage under way."""
        health = self.health
        with self._lock:
            started = health.failed(self._monotonic(), error)
            if started and self.local is not None:
                self.local.drop()  # an earlier outage's states (or a one-off's) are stale
        if not started:
            return
        meta = {**self._meta, "error": health.last_error}
        if events.enabled(EV_DOWN):
            events.emit(EV_DOWN, {}, meta)
        _log.warning(
            "rate limiter %s:%s: %s is down (%s); %s until it answers, trying it again at "
            "most every %gs",
            meta["namespace"],
            meta["limiter"],
            meta["backend"],
            meta["error"],
            self._meanwhile(),
            health.retry_interval,
            extra=log_fields(EV_DOWN, **meta),
        )

    def _meanwhile(self) -> str:
        """What decisions do while the backend is down, in the words of the log record."""
        meanwhile = MEANWHILE[self.health.policy]
        if self.local is not None:
            meanwhile = meanwhile.format(share=f"{self.local.share:.4g}")
        return meanwhile

    def _answered(self) -> None:
        with self._lock:
            if not self.health.down:
                return
            downtime = self.health.answered(self._monotonic())
            if self.local is not None:
                # Safe to forget: the backend kept its own states through the outage, and
                # what was admitted here was never its to count.
                self.local.drop()
        meta = self._meta
        if events.enabled(EV_RECOVERED):
            events.emit(EV_RECOVERED, {"downtime": downtime}, meta)
        _log.warning(
            "rate limiter %s:%s: %s answers again after %.3fs down; %s",
            meta["namespace"],
            meta["limiter"],
            meta["backend"],
            downtime,
            "limits are enforced again"
            if self.local is None
            else "it decides again (the local states are dropped)",
            extra=log_fields(EV_RECOVERED, **meta, downtime=downtime),
        )

    # -- the backend's methods -----------------------------------------------------------------

    def _unreadable(self, error: UnreadableState) -> None:
        """Count and report states a backend could not read: per key, never as an outage."""
        action = "replaced" if error.outcome is not None else "policy"
        with self._lock:
            self.health.unreadable += len(error.keys)
        for key in error.keys:
            scope, caller = scope_and_id(key)
            meta = {**self._meta, "scope": scope, "key": caller, "action": action}
            if events.enabled(EV_UNREADABLE):
                events.emit(EV_UNREADABLE, {}, meta)
            _log.warning(
                "rate limiter %s:%s: %s holds an unreadable state for scope %r, id %r; %s",
                meta["namespace"],
                meta["limiter"],
                meta["backend"],
                scope,
                caller,
                "decided as if its whole allowance were spent"
                + (" (stored so)" if error.repaired else "")
                if error.outcome is not None
                else f"this request follows the failure policy ({meta['policy']})",
                extra=log_fields(EV_UNREADABLE, **meta),
            )

    def _unreadable_outcome(
        self,
        error: UnreadableState,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool,
    ) -> Outcome:
        """A decision on states one of which could not be read: the backend's own (made with
        a spent state in its place) or, if it made none, the policy's for this request alone."""
        self._unreadable(error)
        if error.outcome is not None:
            if commit:
                self._ok()  # the backend answered, and wrote
            return error.outcome
        if self.health.policy == "fail_closed":
            raise BackendError(
                f"rate limiter {self._meta['namespace']}:{self._meta['limiter']}: {error}"
            ) from error
        if self.local is not None:
            return self.local.decide(keys, algorithms, cost, now, commit)
        return True, Unanswered((None,) * len(keys)), now

    def _unanswered_outcome(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool,
        error: BackendError | None = None,
    ) -> Outcome:
        """A decision the backend did not make: raised (fail_closed), made in memory at the
        process's share (local), or admitted, every scope as if unused (fail_open)."""
        self._unanswered(error)
        if self.local is not None:
            return self.local.decide(keys, algorithms, cost, now, commit)
        return True, Unanswered((None,) * len(keys)), now

    def _unanswered_refund(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        error: BackendError | None = None,
    ) -> None:
        """A refund the backend did not take: raised (fail_closed), given to the local states
        (local), or dropped (fail_open)."""
        self._unanswered(error)
        if self.local is not None:
            self.local.refund(keys, algorithms, cost, now)

    def _ok(self) -> None:
        """A call that writes got its answer: that ends an outage (a read alone does not)."""
        if self.health.down:
            self._answered()

    def check(self, keys: Sequence[str], algorithms: Sequence[Algorithm], now: float) -> None:
        """Whether the backend could decide now, for health checks: a peek at ``keys``, then
        the backend's ``check_write(keys)`` if it has one (proof that a decision could be
        written, writing nothing). A failure is recorded as a decision's would be, and raises
        when failing closed; success ends an outage only when the write was proven."""
        check_write = getattr(self.backend, "check_write", None)
        if self._spared(check_write is not None):
            self._unanswered(None)
            return
        try:
            try:
                self.backend.decide(keys, algorithms, 1, now, False)
            except UnreadableState as exc:
                self._unreadable(exc)  # the backend answered: not what a check looks for
            if check_write is not None:
                check_write(keys)
        except BackendError as exc:
            self._unanswered(exc)
            return
        if check_write is not None:
            self._ok()

    def clear(self, prefix: str) -> int:
        return self.backend.clear(prefix)

    def key_count(self) -> int:
        return self.backend.key_count()

    def maintain(self, now: float) -> int:
        return self.backend.maintain(now)

    def counted_keys(self) -> int | None:
        """The key count for a health snapshot: ``None`` when down, or when counting is a scan
        of a shared server (``time_base == "server"``)."""
        if self.health.down or self.backend.time_base == "server":
            return None
        try:
            return self.backend.key_count()
        except BackendError:
            return None


class GuardedBackend(GuardedCalls, AsyncGuardedCalls, BackendGuard):
    """A backend seen through a limiter's failure policy; what the limiter calls.

    Decisions (``decide``, and ``refund``) follow the policy when the backend fails: with
    ``fail_open`` they answer "admitted, every scope as if unused" (a refund is dropped), with
    ``fail_closed`` they raise :class:`~buttress.BackendError`, with ``local`` they are made
    (and refunds taken) in the guard's :class:`~._local.LocalDecisions`. ``reset`` and ``clear`` are
    administrative and always raise. Only a memory backend, which cannot fail, goes unguarded.
    The calls that reach the backend are in ``_guarded_async.py`` (and its generated twin).
    """

    __slots__ = ()
