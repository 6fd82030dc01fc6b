"""What the httpx transport and the requests adapter share: how one outbound request is protected.

A request goes through, from the outside in:

1. the **rate limit** (an outbound quota), charged once per request, however many attempts
   (and given back when the breaker refused every one: no request was made);
2. the **retry**, each attempt one pass through what follows;
3. the **circuit breaker**: the service's (through :class:`~buttress.Infrastructure`), one
   given, or one per host made on demand (at most ``max_hosts``, the least recently used
   forgotten first);
4. the **send**, its timeout capped by what is left of the call's deadline
   (:func:`~buttress.remaining`).

A response is a failure when the rule says so (5xx and 429 by default; a status set, a
predicate, or the service's breaker's ``failure_result``). A failing response is raised inside
the protected call as :class:`ErrorResponse`, so the breaker records it like any failure and a
retry runs again, honouring its ``Retry-After`` (read from the exception's ``response``). A 4xx
is raised too, so that the breaker counts it as it counts any HTTP client error: for nothing
(and a retry does not send it again). Once the call ends, the client gets the response itself,
as it would without buttress; any other is a success. A refusal
(an open breaker, a rate limit) raises its :class:`~buttress.RejectedError`: no response is
made up.

The client's own module does the I/O: how a request is sent, its host, its timeout capped, a
discarded response closed. Nothing here imports an HTTP client.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._breaker import CircuitBreaker
from .._breaker._outcome import result_status
from .._classify import ResultStatus, parse_statuses
from .._errors import ConfigError
from .._policies import remaining
from .._retry import Retry
from ..ratelimit._limiter import RateLimiter

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure

R = TypeVar("R")
V = TypeVar("V")

Predicate = Callable[[Any], bool]
FailureRule = Predicate | int | str | Iterable[int | str]

#: What fails by default: every 5xx, and 429 (the server is overloaded).
DEFAULT_FAILURES = ResultStatus(frozenset({429, *range(500, 600)}))
CLIENT_ERRORS = frozenset(range(400, 500))

#: The shortest timeout a request is sent with: a client refuses zero, and a deadline already
#: past then ends the request at once, by the client's own timeout error.
MIN_TIMEOUT = 0.001

DEFAULT_MAX_HOSTS = 1000


class ErrorResponse(Exception):
    """A response for the breaker to judge, raised inside the protected call: one the rule
    counts as a failure (recorded, and retried), or a 4xx (counted as the breaker counts an
    HTTP client error: neutral, unless ``client_errors_neutral`` is off; 408 as a failure).
    ``response`` is the client's response, whose status and ``Retry-After`` the breaker and
    the retry read. The transport or adapter returns that response once retrying stops: only
    a ``retry``'s ``on`` or a breaker's ``record`` / ``ignore`` predicate ever sees this."""

    def __init__(self, response: Any) -> None:
        super().__init__(f"HTTP {getattr(response, 'status_code', '?')}")
        self.response = response


def cap(timeout: float | None, left: float) -> float:
    """``timeout`` no longer than ``left`` seconds (``None``: no timeout, so ``left``)."""
    return left if timeout is None else min(timeout, left)


def host_key(host: str, port: int | None) -> str:
    """The name one breaker per host goes by: ``api.example.com``, or ``127.0.0.1:8080``
    when the URL names a port."""
    return host if port is None else f"{host}:{port}"


class Bounded(Generic[V]):
    """At most ``size`` values made on demand by ``make(name)``, the least recently used
    forgotten first (an open breaker forgotten starts closed again: size it above the hosts
    a client talks to)."""

    __slots__ = ("_lock", "_make", "_size", "_values")

    def __init__(self, make: Callable[[str], V], size: int) -> None:
        self._make = make
        self._size = size
        self._values: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, name: str) -> V:
        with self._lock:
            value = self._values.get(name)
            if value is not None:
                self._values.move_to_end(name)
                return value
        made = self._make(name)  # outside the lock: it may build a breaker, import things
        with self._lock:
            value = self._values.setdefault(name, made)
            self._values.move_to_end(name)
            while len(self._values) > self._size:
                self._values.popitem(last=False)
            return value


class Held:
    """The failing response the last attempt raised: closed when another attempt starts, or
    when the request ends in an error; returned when it is the request's answer."""

    __slots__ = ("response", "sent")

    def __init__(self) -> None:
        self.response: Any = None
        self.sent = False  # whether any attempt went past the breaker

    def take(self) -> Any:
        response, self.response = self.response, None
        return response


class Outbound:
    """The protection of a client's requests (the module docstring), built from the arguments
    the transport and the adapter take; checked here, so both report a mistake alike."""

    __slots__ = (
        "_breakers",
        "_raised",
        "_rate_key",
        "_rules",
        "_service",
        "breaker",
        "infra",
        "limiter",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        infra: Infrastructure | None,
        service: str | Callable[[str], str] | None,
        breaker: CircuitBreaker | Callable[[str], CircuitBreaker] | None,
        limiter: RateLimiter | str | None,
        rate_key: Any,
        retry: Retry | None,
        timeout: float | None,
        failure_status: FailureRule | None,
        max_hosts: int,
    ) -> None:
        from .._infrastructure import Infrastructure

        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise TypeError(f"max_hosts must be a positive int, got {max_hosts!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a buttress.Retry, got {retry!r}")
        if infra is not None:
            if not isinstance(infra, Infrastructure):
                raise TypeError(f"infra must be a buttress.Infrastructure, got {infra!r}")
            if not (isinstance(service, str) and service) and not callable(service):
                raise TypeError(
                    "with infra=, service= names the service (a string, or a callable "
                    f"taking the host and returning one), got {service!r}"
                )
            if breaker is not None:
                raise TypeError(
                    "give infra= and service=, or breaker=, not both: the service's breaker "
                    "is the infrastructure's"
                )
            if limiter is not None and not isinstance(limiter, RateLimiter | str):
                raise TypeError(f"limiter must be a RateLimiter or a limiter's name: {limiter!r}")
        else:
            if service is not None:
                raise TypeError("service= names a service of infra=; give infra= too")
            if timeout is not None:
                raise TypeError(
                    "timeout= is a service's call timeout: give infra= too (without it, "
                    "set the client's own timeout; a surrounding protected call's deadline "
                    "caps it all the same)"
                )
            if limiter is not None and not isinstance(limiter, RateLimiter):
                raise TypeError(f"limiter must be a buttress.RateLimiter, got {limiter!r}")
            if breaker is not None and not (
                isinstance(breaker, CircuitBreaker) or callable(breaker)
            ):
                raise TypeError(
                    "breaker must be a CircuitBreaker, or a callable taking the host and "
                    f"returning one, got {breaker!r}"
                )
        self.infra = infra
        self._service = service
        self.limiter = limiter
        self._rate_key = rate_key
        self.retry = retry
        self.timeout = timeout
        rule = _failure_rule(failure_status)
        self._raised = None if rule is None else raised_by(rule)
        #: The one breaker every request goes through, when one was given.
        self.breaker = breaker if isinstance(breaker, CircuitBreaker) else None
        self._breakers: Bounded[CircuitBreaker] | None = None
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            self._breakers = Bounded(functools.partial(_made, breaker), max_hosts)
        self._rules: Bounded[Predicate] = Bounded(self._service_rule, max_hosts)

    # -- deciding ----------------------------------------------------------------------------

    def breaker_for(self, host: str) -> CircuitBreaker | None:
        """The breaker a request to ``host`` goes through without an infrastructure."""
        if self._breakers is not None:
            return self._breakers.get(host)
        return self.breaker

    def service_name(self, host: str) -> str:
        service = self._service
        name = service if isinstance(service, str) else service(host)  # type: ignore[misc]
        if not isinstance(name, str) or not name:
            raise TypeError(f"service({host!r}) must return a service name, got {name!r}")
        return name

    def _service_rule(self, name: str) -> Predicate:
        """The rule for a service's responses: the breaker's ``failure_result`` when its
        configuration sets one, else the default."""
        assert self.infra is not None
        layers = self.infra.layers(name)
        if layers.pool is not None or layers.async_pool is not None:
            # infra.call would hand the pooled member to the send, which takes none
            raise ConfigError(
                f"services.{name}.pool",
                "an HTTP client's service takes no pool (the client pools its own "
                "connections): set pool = false for it",
            )
        breaker = layers.breaker
        rule = breaker.config.failure_result if breaker is not None else None
        return raised_by(rule if rule is not None else DEFAULT_FAILURES)

    def raises(self, name: str | None) -> Predicate:
        """Which responses are raised for the breaker to judge (the failures, and 4xx)."""
        if self._raised is not None:
            return self._raised
        return RAISED_BY_DEFAULT if name is None else self._rules.get(name)

    def rate_key_for(self, host: str) -> Any:
        key = self._rate_key
        return key(host) if callable(key) else key


def raised_by(rule: Predicate) -> Predicate:
    """What to raise for the breaker to judge: what ``rule`` counts as a failure, and every
    4xx (one set lookup when the rule is statuses: a status read once per response)."""
    if isinstance(rule, ResultStatus):
        return ResultStatus(rule.statuses | CLIENT_ERRORS)
    return lambda response: rule(response) or result_status(response) in CLIENT_ERRORS


def time_left() -> float | None:
    """What is left of the call's deadline, as a timeout to send with (``None``: none)."""
    left = remaining()
    return None if left is None else max(left, MIN_TIMEOUT)


def _made(make: Callable[[str], CircuitBreaker], host: str) -> CircuitBreaker:
    breaker = make(host)
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"breaker({host!r}) must return a CircuitBreaker, got {breaker!r}")
    return breaker


def _failure_rule(rule: FailureRule | None) -> Predicate | None:
    """The predicate for ``failure_status``: a callable as it is, else the statuses it names
    (``503``, ``"5xx"``, ``"500-599"``, or a list of them), read as a configuration file's
    ``{status = [...]}`` is."""
    if rule is None or callable(rule):
        return rule
    if isinstance(rule, bool) or not isinstance(rule, int | str | list | tuple | set | frozenset):
        raise TypeError(
            "failure_status must be statuses (503, '5xx', '500-599', or a list of them) or a "
            f"predicate taking the response, got {rule!r}"
        )
    items = sorted(rule, key=str) if isinstance(rule, set | frozenset) else rule
    return ResultStatus(parse_statuses("failure_status", items))


RAISED_BY_DEFAULT = raised_by(DEFAULT_FAILURES)
