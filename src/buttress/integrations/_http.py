"""What every web integration answers and reads, free of any framework.

* :func:`refused`: the HTTP answer to a refusal. A rate limit's is ``429 Too Many Requests``
  with ``Retry-After`` and the ``RateLimit`` / ``RateLimit-Policy`` fields of every scope; an
  open breaker's, a shed call's, a pool's timeout (any other :class:`~buttress.RejectedError`)
  is ``503 Service Unavailable`` with ``Retry-After`` when the refusal says when. The body is
  JSON: ``error`` (the class name), ``message`` and ``retry_after``, never the caller's id.
* :func:`admitted_headers`: the ``RateLimit`` fields of a request that was let through.
* :func:`timed_out`: the answer to a request whose handling ran past its timeout before any
  of the response was sent: ``504 Gateway Timeout``.
* :class:`TrustedProxies`: the client's address, read from ``X-Forwarded-For`` or
  ``Forwarded`` only as far as the hops are proxies the operator trusts.
* The keys a request is limited by: :func:`client_ip` and :func:`api_key` read what every
  framework's request has (the peer's address, the header fields); :func:`read_key` reads a
  key, a function of the framework's request, or a table of them (a context: ``{"user": ...,
  "org": ...}``); :func:`key_from_setting` reads one from a settings file's text.
* :func:`answered`: how a request's answer ends the protection around it, so the breaker reads
  an answered status as it reads a raised one (a 4xx neutral, a 5xx a failure).
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, final

from .._errors import (
    CallTimeoutError,
    ConfigError,
    ContextError,
    RateLimitExceeded,
    RejectedError,
)
from ..http import admitted_fields, rate_limit_headers
from ..ratelimit._decision import Decision

Headers = tuple[tuple[str, str], ...]

BAD_REQUEST = 400
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


def unidentified(exc: ContextError) -> Answer:
    """The answer to a request a limiter cannot tell apart (it lacks an id a scope needs,
    :class:`~buttress.ContextError`): ``400 Bad Request``, naming the id, not its value."""
    if not isinstance(exc, ContextError):
        raise TypeError(f"unidentified() answers a buttress.ContextError, got {exc!r}")
    what = f"no {exc.id_name!r} id" if exc.id_name else "no usable id"
    where = f" for rate limit {exc.scope!r}" if exc.scope else ""
    body = {"error": "ContextError", "message": f"the request has {what}{where}"}
    return Answer(BAD_REQUEST, (JSON,), json.dumps(body).encode())


def admitted_headers(decision: Decision | None) -> Headers:
    """The ``RateLimit`` / ``RateLimit-Policy`` fields of an admitting decision (none for
    ``None``: the request met no limiter)."""
    if decision is None:
        return ()
    policy, state = admitted_fields(decision)
    return (("ratelimit-policy", policy), ("ratelimit", state))


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

    def trusts(self, address: str | None) -> bool:
        if not self._networks:
            return False  # no proxy trusted (the common case): no address to parse
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


# -- what a request is limited by ----------------------------------------------------------------


class RequestKey:
    """A key read from what every framework's request has: the peer's address and the header
    fields. Each integration reads it for its framework (:func:`read_key`)."""

    __slots__ = ()

    def read(self, peer: str | None, header: Callable[[str], str | None]) -> str | None:
        raise NotImplementedError


@final
class ClientIP(RequestKey):
    """The client's address, behind the trusted proxies (:func:`client_ip`)."""

    __slots__ = ("proxies",)

    def __init__(self, proxies: TrustedProxies) -> None:
        self.proxies = proxies

    def __repr__(self) -> str:
        return f"client_ip({self.proxies!r})"

    def read(self, peer: str | None, header: Callable[[str], str | None]) -> str | None:
        if not self.proxies.trusts(peer):  # the common case reads no header at all
            return peer
        return self.proxies.client(peer, header("x-forwarded-for"), header("forwarded"))


@final
class HeaderValue(RequestKey):
    """A header field's value (:func:`api_key`); ``None`` when the request has none."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"a header's name must be a non-empty str, got {name!r}")
        self.name = name.strip().lower()

    def __repr__(self) -> str:
        return f"api_key({self.name!r})"

    def read(self, peer: str | None, header: Callable[[str], str | None]) -> str | None:
        return header(self.name) or None


def client_ip(trusted_proxies: Iterable[str] | TrustedProxies = ()) -> ClientIP:
    """A key: the client's address, the peer unless it is one of ``trusted_proxies``
    (addresses or networks), then the first untrusted hop of ``X-Forwarded-For``."""
    if not isinstance(trusted_proxies, TrustedProxies):
        trusted_proxies = TrustedProxies(trusted_proxies)
    return ClientIP(trusted_proxies)


def api_key(header: str = "X-API-Key") -> HeaderValue:
    """A key: the value of the ``header`` field (``None`` without it: a limiter's scope that
    needs the id refuses such a request as a client error, ``ContextError``)."""
    return HeaderValue(header)


def read_key(
    key: Any,
    request: Any,
    peer: Callable[[Any], str | None],
    header: Callable[[Any, str], str | None],
) -> Any:
    """What ``key`` says for ``request``: a :class:`RequestKey` read through the framework's
    ``peer(request)`` and ``header(request, name)``; a function called with the request; a
    mapping of either, read entry by entry (a limiter's context); ``None`` stays ``None``."""
    if key is None:
        return None
    if isinstance(key, RequestKey):
        return key.read(peer(request), lambda name: header(request, name))
    if isinstance(key, Mapping):
        return {name: read_key(part, request, peer, header) for name, part in key.items()}
    return key(request)


def check_key(key: Any, path: str = "key") -> Any:
    """``key`` if :func:`read_key` can read it; a :class:`TypeError` naming ``path`` if not."""
    if key is None or isinstance(key, RequestKey) or callable(key):
        return key
    if isinstance(key, Mapping):
        for name, part in key.items():
            if not isinstance(name, str):
                raise TypeError(f"{path}: a context's names are str, got {name!r}")
            check_key(part, f"{path}[{name!r}]")
        return key
    raise TypeError(
        f"{path}: expected client_ip(), api_key(), a function of the request or a mapping of "
        f"them, got {key!r}"
    )


def key_from_setting(value: Any, trusted_proxies: TrustedProxies, path: str = "key") -> Any:
    """A key as a settings file writes it: ``"ip"`` (the client's address behind
    ``trusted_proxies``), ``"header:X-API-Key"``, ``"module:function"`` (a function of the
    request), a table of these (a context), or already a key. A wrong one is a
    :class:`~buttress.ConfigError` naming ``path``."""
    if isinstance(value, Mapping):
        return {
            str(name): key_from_setting(part, trusted_proxies, f"{path}.{name}")
            for name, part in value.items()
        }
    if not isinstance(value, str):
        try:
            return check_key(value, path)
        except TypeError as exc:
            raise ConfigError(path, str(exc).partition(": ")[2]) from None
    if value == "ip":
        return ClientIP(trusted_proxies)
    kind, _, rest = value.partition(":")
    if kind == "header" and rest.strip():
        return HeaderValue(rest)
    if rest and kind:
        try:
            found = getattr(importlib.import_module(kind), rest)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(path, f"cannot import {value!r}: {exc}") from None
        if callable(found):
            return found
        raise ConfigError(path, f"{value!r} is not a function of the request")
    raise ConfigError(
        path,
        f"{value!r} is not a key: write 'ip', 'header:<name>' or 'module:function'",
    )


# -- what an answer says about the protected service ----------------------------------------------


class AnsweredError(Exception):
    """A request answered with an error status, as the protection around it sees it: the
    breaker reads ``status_code`` as it reads a raised HTTP error's (a 4xx neutral, but 408
    and 429; a 5xx a failure). The integrations raise it inside the protection and catch it
    right outside; the application never sees it."""

    status_code: int = 500

    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")
        self.status_code = status


def answered(status: int) -> AnsweredError | None:
    """How an answer with ``status`` ends the protection around it: ``None`` (a success)
    below 400, else an :class:`AnsweredError` to end it with."""
    return AnsweredError(status) if status >= 400 else None
