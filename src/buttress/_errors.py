"""The exception tree.

::

    ButtressError
    ├── ConfigError                 bad configuration; the message names the key path
    ├── ContextError                a request lacks an id a rate limit needs (a client error)
    ├── RejectedError               the operation was not attempted; .retry_after
    │   ├── CircuitOpenError        .breaker, .state
    │   ├── LoadShedError           .reason ("degraded" | "memory_pressure"), .level
    │   ├── RateLimitExceeded       .scope, .key, .limit, .retry_after, .decision
    │   ├── PoolTimeoutError        .pool, .waited, .connect_error
    │   └── BulkheadFullError       .bulkhead, .reason, .limit, .in_use, .waiting
    ├── PoolClosedError
    ├── BackendError                a backend (Redis, SQLite) failed under fail_closed
    └── InjectedFault               raised by chaos in place of a real failure

A :class:`RejectedError` always means the protected operation did not run, so it is safe to
retry after ``retry_after`` seconds (``None`` when nothing better than "later" is known).

The errors that quote what a user wrote or a driver said (``ConfigError``, ``BackendError``,
``PoolTimeoutError`` while connecting fails) mask its passwords (``_redact.redact_text``).
Every error pickles with its attributes (a process pool, a task queue's pickled results); a
:class:`RejectedError` also turns into plain data and back (:meth:`RejectedError.to_dict`,
:meth:`RejectedError.from_dict`) for a queue whose results are JSON.
"""

from __future__ import annotations

import copyreg
from typing import TYPE_CHECKING, Any

from ._redact import redact_text

if TYPE_CHECKING:
    from .ratelimit._decision import Decision

__all__ = [
    "BackendError",
    "BulkheadFullError",
    "ButtressError",
    "CircuitOpenError",
    "ConfigError",
    "ContextError",
    "InfrastructureClosedError",
    "InjectedFault",
    "LoadShedError",
    "PoolClosedError",
    "PoolTimeoutError",
    "RateLimitExceeded",
    "RejectedError",
]


class ButtressError(Exception):
    """Base class of every error buttress raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # An exception pickles by default as ``cls(*args)``, and ``args`` is only the message,
        # which most constructors here do not take alone: rebuild without calling
        # ``__init__``, with the message as ``args`` and the attributes as they were.
        newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # cls.__new__(cls, *args)
        return (newobj, (type(self), *self.args), self.__dict__ or None)


class ConfigError(ButtressError, ValueError):
    """A configuration value is wrong. ``path`` names it, e.g. ``circuit_breakers.db.window``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message = redact_text(message)  # it may quote a URL or a DSN
        super().__init__(f"{path}: {message}" if path else message)


class ContextError(ButtressError, ValueError):
    """A request cannot be rate limited as given: its context lacks an id that a scope needs
    (``{"user_id": None}`` for a per-user limit), or an id is neither a str nor an int.

    The request is at fault, not the configuration: a web application answers it as a client
    error (400 Bad Request), not a 500. ``scope`` names the scope that needed the id and
    ``id_name`` the context entry it reads (``"user"``, also read as ``"user_id"``); both are
    ``None`` when the key as a whole is not one a limiter takes.
    """

    def __init__(
        self, message: str, *, scope: str | None = None, id_name: str | None = None
    ) -> None:
        self.scope = scope
        self.id_name = id_name
        super().__init__(message)


class RejectedError(ButtressError):
    """The operation was refused before it ran; it may be retried after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The refusal as JSON-ready data: ``error`` (the class name), ``message``,
        ``retry_after`` and the class's other attributes (``scope``, ``key`` and ``limit`` of a
        :class:`RateLimitExceeded`; ``breaker`` and ``state`` of a :class:`CircuitOpenError`;
        ...). An attribute that is not a plain value (a rate limit's ``decision``, a pool's
        ``connect_error``) is ``None`` there. A task queue whose results are JSON keeps these;
        :meth:`from_dict` makes the error again.

        >>> bt.CircuitOpenError("payments", "open", retry_after=2.5).to_dict()  # doctest: +SKIP
        {'error': 'CircuitOpenError', 'message': "circuit 'payments' is open; retry after
        2.500s", 'retry_after': 2.5, 'breaker': 'payments', 'state': 'open'}
        """
        out: dict[str, Any] = {"error": type(self).__name__, "message": str(self)}
        out["retry_after"] = self.retry_after
        for name, value in vars(self).items():
            if not name.startswith("_") and name not in out:
                out[name] = value if _plain(value) else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RejectedError:
        """The error that :meth:`to_dict` described, of its own class (``cls`` or a subclass),
        with the same message and attributes. Only data attributes are set: an entry named
        like a method or a private name (``to_dict``, ``__class__``) is not one, and is left out.
        """
        name = data.get("error")
        kinds = {k.__name__: k for k in _subclasses(cls)}
        kind = kinds.get(name) if isinstance(name, str) else None
        if kind is None:
            raise ValueError(
                f"'error' must name {cls.__name__} or a subclass "
                f"({', '.join(sorted(kinds))}), got {name!r}"
            )
        exc = kind.__new__(kind, str(data.get("message", "")))
        exc.retry_after = None
        for attribute, value in data.items():
            if (
                isinstance(attribute, str)
                and attribute not in ("error", "message")
                and not attribute.startswith("_")
                and not hasattr(kind, attribute)
            ):
                setattr(exc, attribute, value)
        return exc


class CircuitOpenError(RejectedError):
    """The breaker is open (or forced open, or out of half-open probes)."""

    def __init__(self, breaker: str, state: str, *, retry_after: float | None = None) -> None:
        self.breaker = breaker
        self.state = state
        wait = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(f"circuit {breaker!r} is {state}{wait}", retry_after=retry_after)


class LoadShedError(RejectedError):
    """Work was shed: by a degraded breaker or because memory is critical."""

    def __init__(
        self,
        reason: str,
        *,
        level: str | None = None,
        source: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.level = level
        self.source = source
        where = f" by {source!r}" if source else ""
        lvl = f" ({level})" if level else ""
        super().__init__(f"load shed{where}: {reason}{lvl}", retry_after=retry_after)


class RateLimitExceeded(RejectedError):
    """A rate limit refused the request; ``scope`` names the limit that refused.

    ``decision`` is the limiter's :class:`~buttress.Decision` (every scope's numbers, for
    ``buttress.http.rate_limit_headers``), or ``None`` when raised elsewhere.
    """

    def __init__(
        self,
        scope: str,
        *,
        key: str | None = None,
        limit: float | None = None,
        retry_after: float | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.scope = scope
        self.key = key
        self.limit = limit
        self.decision = decision
        who = f" for {key!r}" if key is not None else ""
        wait = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(f"rate limit {scope!r} exceeded{who}{wait}", retry_after=retry_after)


class PoolTimeoutError(RejectedError):
    """No pool member became free within ``checkout_timeout`` (or the wait queue was full).

    ``connect_error`` is the pool's last connect error when the wait ended while connecting
    kept failing (also the ``__cause__``); ``None`` for a pool that was merely busy.
    """

    def __init__(
        self,
        pool: str,
        *,
        waited: float,
        message: str | None = None,
        connect_error: BaseException | None = None,
    ) -> None:
        self.pool = pool
        self.waited = waited
        self.connect_error = connect_error
        if message is not None and connect_error is not None:
            message = redact_text(message)  # it quotes the driver's error
        super().__init__(
            message or f"pool {pool!r}: no connection available after {waited:.3f}s",
            retry_after=None,
        )


class BulkheadFullError(RejectedError):
    """A bulkhead had no room: as many calls in flight as its limit, and no place (or no time
    left) to wait. ``reason`` is ``"full"`` (refused at once: no waiting allowed, or the queue
    was full) or ``"timeout"`` (waited ``wait_timeout`` in the queue). ``retry_after`` is an
    estimate from the bulkhead's recent service times of when a place frees up."""

    def __init__(
        self,
        bulkhead: str,
        *,
        reason: str,
        limit: int,
        in_use: int,
        waiting: int,
        retry_after: float | None = None,
    ) -> None:
        self.bulkhead = bulkhead
        self.reason = reason
        self.limit = limit
        self.in_use = in_use
        self.waiting = waiting
        why = "full" if reason == "full" else "full after waiting"
        wait = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(
            f"bulkhead {bulkhead!r} {why} ({in_use} of {limit} in use, {waiting} waiting){wait}",
            retry_after=retry_after,
        )


class PoolClosedError(ButtressError):
    """The pool is closed; no connection will be handed out."""


class InfrastructureClosedError(ButtressError, RuntimeError):
    """The :class:`~buttress.Infrastructure` was closed; it protects no more calls."""


class BackendError(ButtressError):
    """A state backend (SQLite, Redis) failed and the limiter's policy is ``fail_closed``."""

    def __init__(self, *args: object) -> None:
        # A message quotes the driver's error: masked, as ConfigError's.
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class InjectedFault(ButtressError):
    """Raised by fault injection in place of a real failure; always tagged ``injected``."""

    injected = True


class CallTimeoutError(ButtressError, TimeoutError):
    """A protected call ran past its ``timeout``: a failure of the dependency, which the
    breaker records as one (never as a neutral cancellation). ``timeout`` is the seconds the
    call had; ``service`` the service it called."""

    def __init__(self, service: str, timeout: float) -> None:
        super().__init__(
            f"service {service!r}: the call took longer than its timeout ({timeout:g} s)"
        )
        self.service = service
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        # An OSError made without __init__ prints nothing: rebuild it through __init__.
        return (type(self), (self.service, self.timeout), self.__dict__)


def _plain(value: object) -> bool:
    return value is None or type(value) in (str, int, float, bool)


def _subclasses(cls: type[RejectedError]) -> list[type[RejectedError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


for _cls in (
    ButtressError,
    ConfigError,
    ContextError,
    RejectedError,
    CircuitOpenError,
    LoadShedError,
    RateLimitExceeded,
    PoolTimeoutError,
    BulkheadFullError,
    PoolClosedError,
    InfrastructureClosedError,
    BackendError,
    InjectedFault,
    CallTimeoutError,
):
    _cls.__module__ = "buttress"
del _cls
