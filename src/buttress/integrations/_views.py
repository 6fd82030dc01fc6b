"""A view's protection, written once for the web integrations that guard views (Django,
Flask, aiohttp): the policy a view is guarded by, how a request passes it, how the view's
answer ends it, and the settings they are configured from. Framework-free: each integration
reads its request (peer, header fields) and its answer's status, and writes the answer.

A :class:`Policy` guards a view by a service (``infra.protect(service)``: its memory
shedding, rate limit, breaker, pool and chaos) or by a rate limiter alone. :func:`enter`
(:func:`enter_async`) passes a request through it or raises the
:class:`~buttress.RejectedError` to answer with (``_http.refused``); :meth:`Passage.leave`
ends it with what the view did: an exception it raised, as the core classifies any, or the
status it answered (``_http.answered``: a 4xx neutral, a 5xx a failure).
"""

from __future__ import annotations

import atexit
import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, ContextError, RejectedError
from .._priority import NORMAL, priority_of
from ..ratelimit._decision import Decision, exceeded
from ..ratelimit._limiter import RateLimiter
from ._http import (
    Answer,
    ClientIP,
    Headers,
    TrustedProxies,
    admitted_headers,
    answered,
    check_key,
    key_from_setting,
    refused,
    unidentified,
)

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure
    from .._infrastructure._infrastructure import Protection

ATTRIBUTE = "buttress_policy"  # the policy a decorator gave a view; Policy.EXEMPT for none


@dataclass(frozen=True, slots=True)
class Policy:
    """What guards a view: ``service`` (the infrastructure's protection of it, with
    ``limiter`` in place of the service's own when given), or ``limiter`` alone (a configured
    limiter's name or a :class:`~buttress.RateLimiter`); ``key`` names the caller (see
    ``_http.read_key``); ``cost`` is charged to every scope; ``priority`` (``"critical"``,
    ``"normal"``, ``"sheddable"``; ``critical=True`` its shorthand) says which requests
    overload sheds first (docs/bulkhead.md, "Priorities")."""

    service: str | None = None
    limiter: str | RateLimiter | None = None
    key: Any = None
    cost: float = 1
    critical: bool | None = None
    priority: str | None = None

    def __post_init__(self) -> None:
        if self.service is None and self.limiter is None:
            raise TypeError("a policy needs a service to protect or a limiter")
        if self.service is not None and (not isinstance(self.service, str) or not self.service):
            raise TypeError(f"service must be a service's name, got {self.service!r}")
        if self.limiter is not None and not isinstance(self.limiter, str | RateLimiter):
            raise TypeError(
                f"limiter must be a limiter's name or a RateLimiter, got {self.limiter!r}"
            )
        if isinstance(self.cost, bool) or not isinstance(self.cost, int | float) or self.cost <= 0:
            raise TypeError(f"cost must be a number above 0, got {self.cost!r}")
        check_key(self.key)
        if self.priority is not None or self.critical is not None:
            priority_of(self.priority, self.critical, NORMAL)  # a wrong one fails here


EXEMPT: Any = object()  # a view's mark: no policy, not even the default one


@dataclass(slots=True)
class Passage:
    """One request let through a policy: :meth:`leave` (or :meth:`leave_async`) ends it
    exactly once; :meth:`fields` are the ``RateLimit`` fields for its answer."""

    protection: Protection | None
    decision: Decision | None

    def _ending(self, status: int | None, exc: BaseException | None) -> BaseException | None:
        if exc is None and status is not None:
            return answered(status)
        return exc

    def leave(self, status: int | None = None, exc: BaseException | None = None) -> None:
        """End the protection: with ``exc`` when the view raised, else by the ``status`` it
        answered."""
        protection, self.protection = self.protection, None
        if protection is not None:
            ending = self._ending(status, exc)
            if ending is None:
                protection.__exit__(None, None, None)
            else:
                protection.__exit__(type(ending), ending, ending.__traceback__)

    async def leave_async(
        self, status: int | None = None, exc: BaseException | None = None
    ) -> None:
        """:meth:`leave`, for ``async`` views."""
        protection, self.protection = self.protection, None
        if protection is not None:
            ending = self._ending(status, exc)
            if ending is None:
                await protection.__aexit__(None, None, None)
            else:
                await protection.__aexit__(type(ending), ending, ending.__traceback__)

    def fields(self) -> Headers:
        """The ``RateLimit`` fields of the admitting decision (none without a limiter)."""
        return admitted_headers(self.decision)


def enter(infra: Infrastructure, policy: Policy, key: Any) -> Passage:
    """Let a request whose caller is ``key`` through ``policy``, or raise the
    :class:`~buttress.RejectedError` to answer it with."""
    if policy.service is None:
        decision = _limiter(infra, policy.limiter).try_acquire(key, policy.cost)
        if not decision.allowed:
            raise exceeded(decision)
        return Passage(None, decision)
    protection = _protection(infra, policy, key)
    protection.__enter__()
    return Passage(protection, protection.decision)


async def enter_async(infra: Infrastructure, policy: Policy, key: Any) -> Passage:
    """:func:`enter`, for asyncio: the limiter's backend and the pool are awaited."""
    if policy.service is None:
        limiter = _limiter(infra, policy.limiter)
        decision = await limiter.try_acquire_async(key, policy.cost)
        if not decision.allowed:
            raise exceeded(decision)
        return Passage(None, decision)
    protection = _protection(infra, policy, key)
    await protection.__aenter__()
    return Passage(protection, protection.decision)


# What a request may be answered with instead of its view: refused (429, 503), or not to be
# told apart by the limiter (400).
REFUSALS = (RejectedError, ContextError)


def refusal(exc: RejectedError | ContextError, rate_limit_headers: bool = True) -> Answer:
    """The answer to a request ``exc`` stopped (one of :data:`REFUSALS`)."""
    if isinstance(exc, ContextError):
        return unidentified(exc)
    return refused(exc, rate_limit_headers_on=rate_limit_headers)


def _protection(infra: Infrastructure, policy: Policy, key: Any) -> Protection:
    assert policy.service is not None
    ids: dict[str, Any] = {"context": key} if isinstance(key, Mapping) else {"rate_key": key}
    return infra.protect(
        policy.service,
        **ids,
        cost=policy.cost,
        priority=policy.priority,  # type: ignore[arg-type]
        critical=policy.critical,
        limiter=policy.limiter,
    )


def _limiter(infra: Infrastructure, limiter: str | RateLimiter | None) -> RateLimiter:
    if isinstance(limiter, RateLimiter):
        return limiter
    found = infra.limiters.get(limiter) if isinstance(limiter, str) else None
    if found is None:
        known = ", ".join(map(repr, infra.limiters)) or "none is configured"
        raise ConfigError("limiter", f"names no limiter {limiter!r} (known: {known})")
    return found


# -- settings -----------------------------------------------------------------------------------

_KNOWN = (
    "infrastructure",
    "config",
    "namespace",
    "trusted_proxies",
    "protect",
    "rate_limit",
    "rate_limit_headers",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """An integration's settings, read by :func:`read_settings`."""

    infrastructure: Infrastructure | None = None  # given: used, never closed
    config: Any = None  # else built from this (a TOML path, a dict), closed at exit
    namespace: str = "web"
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    default: Policy | None = None  # every view's policy, unless it has its own or is exempt
    rate_limit_headers: bool = True
    # Who a rate limit without a key counts: the client's address, behind the trusted proxies.
    client: ClientIP = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client", ClientIP(self.trusted_proxies))


def caller(policy: Policy, client: ClientIP) -> Any:
    """The key ``policy`` reads its caller by: its own, or ``client`` for a rate limit alone
    given none (a protection's limiter may be shared by all: it needs no key of its own)."""
    if policy.key is None and policy.service is None:
        return client
    return policy.key


def read_settings(values: Mapping[str, Any], where: str | Callable[[str], str]) -> Settings:
    """The settings in ``values`` (Django's ``BUTTRESS``, Flask's ``BUTTRESS_*``); a wrong
    one is a :class:`~buttress.ConfigError` whose path names it: ``where.name``, or
    ``where(name)`` for a function."""
    if not isinstance(values, Mapping):
        raise ConfigError(str(where), f"must be a table of settings, got {values!r}")
    if isinstance(where, str):
        prefix = where
        where = lambda name: f"{prefix}.{name}"  # noqa: E731
    at = where
    for name in values:
        if name not in _KNOWN:
            raise ConfigError(at(name), f"unknown setting (known: {', '.join(_KNOWN)})")
    infra = values.get("infrastructure")
    if isinstance(infra, str):
        infra = _imported(infra, at("infrastructure"))
    if infra is not None and not hasattr(infra, "protect"):
        raise ConfigError(at("infrastructure"), f"not a buttress.Infrastructure: {infra!r}")
    if infra is not None and values.get("config") is not None:
        raise ConfigError(at("config"), "give an infrastructure or a config, not both")
    namespace = values.get("namespace", "web")
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(at("namespace"), f"must be a name, got {namespace!r}")
    proxies = values.get("trusted_proxies", ())
    try:
        trusted = proxies if isinstance(proxies, TrustedProxies) else TrustedProxies(proxies)
    except ConfigError as exc:
        raise ConfigError(at(exc.path), exc.message) from None
    defaults = [name for name in ("protect", "rate_limit") if values.get(name) is not None]
    if len(defaults) > 1:
        raise ConfigError(
            at("rate_limit"),
            "give protect (with its own limiter= if need be) or rate_limit, not both",
        )
    default = None
    if defaults:
        name = defaults[0]
        default = _policy(values[name], name, trusted, at(name))
    headers = values.get("rate_limit_headers", True)
    if not isinstance(headers, bool):
        raise ConfigError(at("rate_limit_headers"), f"must be true or false, got {headers!r}")
    return Settings(infra, values.get("config"), namespace, trusted, default, headers)


_POLICY_KEYS = {
    "protect": ("service", "limiter", "key", "cost", "critical", "priority"),
    "rate_limit": ("limiter", "key", "cost"),
}


def _policy(table: Any, kind: str, proxies: TrustedProxies, path: str) -> Policy:
    if isinstance(table, str):  # protect = "service", rate_limit = "limiter"
        table = {"service" if kind == "protect" else "limiter": table}
    if not isinstance(table, Mapping):
        raise ConfigError(path, f"must be a table ({', '.join(_POLICY_KEYS[kind])}), got {table!r}")
    for name in table:
        if name not in _POLICY_KEYS[kind]:
            raise ConfigError(
                f"{path}.{name}", f"unknown setting (known: {', '.join(_POLICY_KEYS[kind])})"
            )
    values = dict(table)
    if "key" in values:
        values["key"] = key_from_setting(values["key"], proxies, f"{path}.key")
    if kind == "rate_limit" and values.get("limiter") is None:
        raise ConfigError(f"{path}.limiter", "a rate limit needs a limiter's name")
    if kind == "protect" and values.get("service") is None:
        raise ConfigError(f"{path}.service", "protect needs a service's name")
    try:
        return Policy(**values)
    except TypeError as exc:
        raise ConfigError(path, str(exc)) from None
    except ConfigError as exc:  # a wrong priority
        raise ConfigError(f"{path}.{exc.path}", exc.message) from None


def _imported(spec: str, path: str) -> Any:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(path, f"cannot import {spec!r} ('module:name'): {exc}") from None


class ProcessInfrastructure:
    """The infrastructure of a process's settings: the one given, or one built on first use
    from the configuration and closed at exit (or by :meth:`close`)."""

    __slots__ = ("_built", "_lock", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: Infrastructure | None = None
        self._lock = threading.Lock()

    def get(self) -> Infrastructure:
        if self.settings.infrastructure is not None:
            return self.settings.infrastructure
        built = self._built
        if built is None:
            with self._lock:
                built = self._built
                if built is None:
                    from .._infrastructure import Infrastructure

                    built = Infrastructure(self.settings.namespace, self.settings.config)
                    atexit.register(built.close)
                    self._built = built
        return built

    def close(self) -> None:
        """Close the infrastructure this built (never one given)."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None:
            atexit.unregister(built.close)
            built.close()
