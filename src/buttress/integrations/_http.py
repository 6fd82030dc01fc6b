"""What every web integration answers and reads, free of any framework.

* :func:`refused`: the HTTP answer to a refusal. A rate limit's is ``429 Too Many Requests``
  with ``Retry-After`` and the ``RateLimit`` / ``RateLimit-Policy`` fields of every scope; an
  open breaker's, a shed call's, a pool's timeout (any other :class:`~buttress.RejectedError`)
  is ``503 Service Unavailable`` with ``Retry-After`` when the refusal says when. The body is
  JSON: ``error`` (the class name), ``message`` and ``retry_after``, never the caller's id.
* :func:`admitted_headers`: the ``RateLimit`` fields of a request that was let through.
* :func:`timed_out`: the answer to a request whose handling ran past its timeout before any
  of the response was sent: ``504 Gateway Timeout``.
* :class:`ErrorAnswer`: an application's error answer (a 4xx or 5xx it returned rather than
  raised) as an exception, for a middleware to raise inside a protected block so the breaker
  counts it as it counts a raised error with that status.
* :class:`TrustedProxies`: the client's address, read from ``X-Forwarded-For`` or
  ``Forwarded`` only as far as the hops are proxies the operator trusts.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._errors import CallTimeoutError, ConfigError, RateLimitExceeded, RejectedError
from ..http import rate_limit_headers
from ..ratelimit._decision import Decision

Headers = tuple[tuple[str, str], ...]

TOO_MANY_REQUESTS = 429
SERVICE_UNAVAILABLE = 503
GATEWAY_TIMEOUT = 504
JSON = ("content-type", "application/json")


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: its status, header fields (lower-case names) and body."""

    status: int
    headers: Headers
    body: bytes


def refused(exc: RejectedError, *, rate_limit_headers_on: bool = True) -> Answer:
    """The answer to a request ``exc`` refused (see the module docstring).
    ``rate_limit_headers_on=False`` leaves out the ``RateLimit`` fields (``Retry-After``
    stays)."""
    if not isinstance(exc, RejectedError):
        raise TypeError(f"refused() answers a buttress.RejectedError, got {exc!r}")
    fields: dict[str, str] = {}
    if isinstance(exc, RateLimitExceeded):
        status = TOO_MANY_REQUESTS
        if rate_limit_headers_on:
            fields.update((k.lower(), v) for k, v in rate_limit_headers(exc.decision).items())
    else:
        status = SERVICE_UNAVAILABLE
    if "retry-after" not in fields and exc.retry_after is not None:
        fields["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return Answer(status, (JSON, *fields.items()), _json(refusal_document(exc)))


def refusal_document(exc: RejectedError) -> dict[str, Any]:
    """The body of :func:`refused`'s answer as data: ``error``, ``message``, ``retry_after``
    (for a framework that renders its own error bodies, e.g. FastAPI's ``detail``)."""
    return {
        "error": type(exc).__name__,
        "message": _public_message(exc),
        "retry_after": exc.retry_after,
    }


def timed_out(exc: CallTimeoutError) -> Answer:
    """The answer to a request whose handling ran past its timeout before a response began:
    ``504 Gateway Timeout``, with a JSON body as :func:`refused`'s (``retry_after`` null)."""
    if not isinstance(exc, CallTimeoutError):
        raise TypeError(f"timed_out() answers a buttress.CallTimeoutError, got {exc!r}")
    body = {"error": type(exc).__name__, "message": str(exc), "retry_after": None}
    return Answer(GATEWAY_TIMEOUT, (JSON,), _json(body))


class ErrorAnswer(Exception):
    """An application answered ``status`` (400-599) instead of raising. A middleware raises
    it inside a protected block, so the breaker counts the answer as a raised error with
    that status (its ``status_code``): a 5xx a failure, a 4xx neutral except 408 and 429,
    and any ``record`` / ``ignore`` status rule applies. The middleware then drops it: the
    answer is on its way already."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the application answered {status}")
        self.status_code = status


def admitted_headers(decision: Decision | None) -> Headers:
    """The ``RateLimit`` / ``RateLimit-Policy`` fields of an admitting decision (none for
    ``None``: the request met no limiter)."""
    return tuple((k.lower(), v) for k, v in rate_limit_headers(decision).items())


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _public_message(exc: RejectedError) -> str:
    # A rate limit's message names the caller's id ("... exceeded for 'u1'"): the answer says
    # which limit, never whose.
    if isinstance(exc, RateLimitExceeded):
        return f"rate limit {exc.scope!r} exceeded"
    return str(exc)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose forwarding fields are believed: addresses or networks
    (``["10.0.0.0/8", "127.0.0.1"]``). Empty: none, the peer is the client.

    :meth:`client` walks the forwarded chain from the nearest hop back, while each hop is a
    trusted proxy, and returns the first address that is not: a client cannot pass itself off
    as anyone by sending its own ``X-Forwarded-For``, as long as the proxies append to it.
    """

    __slots__ = ("_networks",)

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            proxies = [proxies]
        networks: list[Network] = []
        for i, text in enumerate(proxies):
            try:
                networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"trusted_proxies[{i}]",
                    f"{text!r} is not an IP address or network (e.g. '10.0.0.0/8')",
                ) from None
        self._networks = tuple(networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def __bool__(self) -> bool:
        """Whether any proxy is trusted (else :meth:`client` is always the peer)."""
        return bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self._networks)

    def client(
        self, peer: str | None, forwarded_for: str | None = None, forwarded: str | None = None
    ) -> str | None:
        """The client's address: ``peer`` (the connection's remote address), unless it is a
        trusted proxy, then back through ``X-Forwarded-For`` (``forwarded_for``) or, without
        it, RFC 7239 ``Forwarded`` (``forwarded``)."""
        if not self._networks or not self.trusts(peer):
            return peer
        hops = _hops(forwarded_for, forwarded)
        client = peer
        for hop in reversed(hops):
            client = hop
            if not self.trusts(hop):
                break
        return client


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _hops(forwarded_for: str | None, forwarded: str | None) -> list[str]:
    if forwarded_for:
        return [h.strip() for h in forwarded_for.split(",") if h.strip()]
    out: list[str] = []
    for element in (forwarded or "").split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for" and value:
                out.append(_node(value.strip().strip('"')))
    return out


def _node(value: str) -> str:
    """An RFC 7239 node as an address: ``[2001:db8::1]:4711`` → ``2001:db8::1``,
    ``192.0.2.1:80`` → ``192.0.2.1``."""
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value
