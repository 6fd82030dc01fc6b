"""``Scope``: one limit of a rate limiter, validated, and the algorithm object it builds."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._concurrency import is_async_callable
from .._errors import ConfigError
from .._validate import at_least, is_number, positive
from ._adaptive import AdaptiveLimit
from ._algorithms import Algorithm
from ._rates import Rate, parse_rates
from ._registry import ALGORITHMS, REGISTRY, AlgorithmName

__all__ = [
    "FINEST_SECONDS",
    "LONGEST_SECONDS",
    "SHARED_SCOPE",
    "Overrides",
    "Scope",
    "check_name",
    "check_overrides",
    "check_rate",
    "check_scopes",
    "scopes_from_rates",
]

SHARED_SCOPE = "global"
"""A scope of this name is shared by every caller unless it says otherwise (``by=``)."""

FINEST_SECONDS = 1e-9
"""The shortest window, and the shortest time one unit of cost takes to come back
(``window / limit``): no clock buttress reads times anything finer than a nanosecond, and a
shorter interval underflows (``window=1e-320`` would turn the limit off)."""

LONGEST_SECONDS = 1e12
"""The longest window, ``window / limit`` and full burst (``burst * window / limit``): about
31,700 years, past any state's lifetime and far from where seconds overflow."""

Overrides: TypeAlias = Mapping[str | int, float] | Callable[[str], "float | None"]
"""Per-id limits of a scope: a mapping of id to limit, or a callable ``(id) -> limit | None``
(``None``: the scope's own limit)."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ADAPTIVE_ONLY = ("min_limit", "max_limit", "increase", "slow_call")
_WITH_BURST = " and ".join(name for name, spec in REGISTRY.items() if spec.burst)
_ADAPTIVE = " and ".join(f"algorithm={name!r}" for name, spec in REGISTRY.items() if spec.adaptive)


def check_name(path: str, value: object) -> str:
    """Names end up in storage keys, header fields and telemetry: keep them plain."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            path, f"must be a non-empty string of letters, digits, '_', '.' or '-', got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Scope:
    """One limit: ``limit`` units of cost per ``window`` seconds (default 60), for each id of
    the scope; :meth:`parse` makes one from a rate string (``Scope.parse("100/minute")``).

    * ``name`` names the limit in decisions, headers and telemetry;
    * ``by`` is the context entry holding the caller's id for this scope: a request's context
      ``{"user": "u1"}`` or ``{"user_id": "u1"}`` fills a scope with ``by="user"``. It defaults
      to ``name``; ``None`` makes the scope shared by every caller, which is the default for a
      scope named ``"global"``. Two scopes may read the same id (``10/s`` and ``1000/h`` per
      user: ``Scope("user", 10, 1.0)`` and ``Scope("user_hourly", 1000, 3600.0, by="user")``);
    * ``algorithm``: ``token_bucket`` (default), ``fixed_window``, ``sliding_window`` or
      ``adaptive``; ``burst`` (token bucket and adaptive) is how much may be spent at once
      (default ``limit``);
    * adaptive only: the limit starts at ``limit`` and moves within ``[min_limit, max_limit]``
      (defaults ``limit / 10``, at least 1, and ``limit``), growing by ``increase`` (default a
      tenth of the range) per window of healthy traffic, multiplied by ``decrease`` on trouble
      at most once per ``cooldown`` seconds; calls slower than ``slow_call`` count as trouble;
    * ``overrides``: per-id limits, for an identified scope of a fixed limit: a mapping of id
      to limit (``{"acme": 50_000}``; ids as the scope reads them, ``12345`` and ``"12345"``
      one id) or a callable ``(id) -> limit | None`` called with the id's text at each
      decision (``None``: the scope's own limit). An id's burst is the scope's burst scaled by
      the same ratio as its limit; window and algorithm stay the scope's (``_overrides.py``).

    >>> Scope("user", limit=100, window=60.0).by
    'user'
    >>> Scope("global", limit=10_000, window=60.0).shared
    True
    """

    name: str
    limit: float
    window: float = 60.0
    algorithm: AlgorithmName = "token_bucket"
    burst: float | None = None
    by: str | None = ""
    min_limit: float | None = None
    max_limit: float | None = None
    increase: float | None = None
    decrease: float = 0.5
    cooldown: float = 1.0
    slow_call: float | None = None
    # Not hashed (a dict is not hashable); compared. A mapping is kept as a dict of id text.
    overrides: Overrides | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        name = check_name("name", self.name)
        positive(f"{name}.limit", self.limit)
        positive(f"{name}.window", self.window)
        check_rate(name, self.limit, self.window)
        spec = REGISTRY.get(self.algorithm)
        if spec is None:
            raise ConfigError(
                f"{name}.algorithm",
                f"must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}",
            )
        if self.burst is not None:
            if not spec.burst:
                raise ConfigError(
                    f"{name}.burst", f"applies to {_WITH_BURST}, not {self.algorithm}"
                )
            positive(f"{name}.burst", self.burst)
        check_rate(name, self.limit, self.window, self.burst)
        if self.by == "":
            object.__setattr__(self, "by", None if name == SHARED_SCOPE else name)
        elif self.by is not None:
            check_name(f"{name}.by", self.by)
        if self.overrides is not None:
            object.__setattr__(self, "overrides", check_overrides(self, self.overrides))
        if not spec.adaptive:
            for field_name in _ADAPTIVE_ONLY:
                if getattr(self, field_name) is not None:
                    raise ConfigError(f"{name}.{field_name}", f"applies to {_ADAPTIVE} only")
            return
        max_limit = self.limit if self.max_limit is None else self.max_limit
        min_limit = max(1.0, self.limit / 10.0) if self.min_limit is None else self.min_limit
        positive(f"{name}.max_limit", max_limit)
        at_least(f"{name}.min_limit", min_limit, 1.0)
        check_rate(name, self.limit, self.window, max_limit=max_limit)
        if not min_limit <= self.limit <= max_limit:
            raise ConfigError(
                f"{name}.limit",
                f"must lie within [min_limit, max_limit] = [{min_limit:g}, {max_limit:g}], "
                f"got {self.limit:g}",
            )
        if self.increase is None:
            increase = max(1.0, (max_limit - min_limit) / 10.0)
        else:
            increase = positive(f"{name}.increase", self.increase)
        if not (isinstance(self.decrease, int | float) and 0.0 < self.decrease < 1.0):
            raise ConfigError(f"{name}.decrease", f"must be in (0, 1), got {self.decrease!r}")
        at_least(f"{name}.cooldown", self.cooldown, 0.0)
        if self.slow_call is not None:
            positive(f"{name}.slow_call", self.slow_call)
        object.__setattr__(self, "min_limit", min_limit)
        object.__setattr__(self, "max_limit", max_limit)
        object.__setattr__(self, "increase", increase)

    @classmethod
    def parse(cls, rate: str, name: str = SHARED_SCOPE, **settings: Any) -> Scope:
        """A scope from one rate string: ``Scope.parse("100/minute", "user")`` is
        ``Scope("user", 100, 60.0)``; ``settings`` are the other fields (``algorithm``,
        ``burst``, ``by``...). ``name`` defaults to ``"global"``, a scope every caller shares.
        The notation (``"10 per second"``, ``"5/10s"``) is in ``ratelimit/_rates.py``.

        >>> scope = Scope.parse("1000/hour", "user")
        >>> scope.limit, scope.window
        (1000.0, 3600.0)
        """
        rates = _rates_of("rate", rate)
        if len(rates) > 1:
            raise ConfigError(
                "rate",
                f"{rate!r} holds {len(rates)} rates; a scope takes one "
                f"(RateLimiter({rate!r}) makes a scope of each)",
            )
        return cls(name, rates[0].limit, rates[0].window, **settings)

    @property
    def adaptive(self) -> bool:
        """Whether this scope's limit moves with feedback (see ``RateLimiter.record``)."""
        return REGISTRY[self.algorithm].adaptive

    @property
    def shared(self) -> bool:
        """Whether every caller shares this scope's one key (no id needed)."""
        return self.by is None

    def build(self, limit: float | None = None) -> Algorithm:
        """The algorithm object for this scope, at ``limit`` if given (an adaptive scope's
        current limit, an id's override): the burst scales with the limit, window and
        algorithm stay."""
        spec = REGISTRY[self.algorithm]
        current = self.limit if limit is None else limit
        if not spec.burst:
            return spec.kind(current, self.window)
        burst = None if self.burst is None else self.burst * current / self.limit
        return spec.kind(current, self.window, burst)

    def override_limit(self, path: str, value: object) -> float:
        """``value`` checked as a limit of this scope for one id (``ConfigError`` at
        ``path``): a finite number > 0, whose interval and scaled burst are in bounds."""
        if not is_number(value) or not 0 < value < math.inf:  # type: ignore[operator]
            raise ConfigError(path, f"must be a finite number > 0 (a limit), got {value!r}")
        limit: float = value  # type: ignore[assignment]
        burst = None if self.burst is None else self.burst * limit / self.limit
        try:
            check_rate(self.name, limit, self.window, burst)
        except ConfigError as exc:
            raise ConfigError(path, exc.message) from None
        return limit

    def controller(self) -> AdaptiveLimit:
        """The AIMD controller of an adaptive scope."""
        assert self.min_limit is not None
        assert self.max_limit is not None
        assert self.increase is not None
        return AdaptiveLimit(
            min_limit=float(self.min_limit),
            max_limit=float(self.max_limit),
            increase=float(self.increase),
            decrease=float(self.decrease),
            cooldown=float(self.cooldown),
            slow_call=self.slow_call,
        )


def check_overrides(scope: Scope, overrides: object) -> Overrides:
    """A scope's ``overrides`` checked (``ConfigError`` at ``<scope>.overrides...``): a
    mapping is returned as a new dict of id text to float limit, a callable as it is."""
    path = f"{scope.name}.overrides"
    if scope.by is None:
        raise ConfigError(path, "apply to an identified scope (by=...), not a shared one")
    if REGISTRY[scope.algorithm].adaptive:
        raise ConfigError(path, "apply to a fixed limit, not algorithm='adaptive'")
    if isinstance(overrides, Mapping):
        out: dict[str, float] = {}
        for given, limit in overrides.items():
            if not isinstance(given, str | int) or isinstance(given, bool):
                raise ConfigError(path, f"ids are str or int, got {given!r}")
            text = str(given)
            if text in out:
                raise ConfigError(path, f"{given!r} and {text!r} are one id; give it once")
            out[text] = scope.override_limit(f"{path}[{given!r}]", limit)
        return out  # type: ignore[return-value]
    if is_async_callable(overrides):
        raise ConfigError(
            path,
            f"must be a plain function (it is called inside every decision), got the "
            f"coroutine function {overrides!r}",
        )
    if callable(overrides):
        return overrides
    raise ConfigError(
        path, f"must be a mapping of id to limit or a callable (id) -> limit, got {overrides!r}"
    )


def check_rate(
    name: str,
    limit: float,
    window: float,
    burst: float | None = None,
    max_limit: float | None = None,
) -> None:
    """``ConfigError`` (at ``name.window``, ``name.limit``, ...) unless ``window``, ``window /
    limit`` (at ``max_limit`` too) and ``burst * window / limit`` lie within
    [:data:`FINEST_SECONDS`, :data:`LONGEST_SECONDS`]. Takes numbers already checked positive."""
    if window < FINEST_SECONDS:
        raise ConfigError(
            f"{name}.window",
            f"must be at least {FINEST_SECONDS:g} s (no clock times finer than a nanosecond), "
            f"got {window!r}",
        )
    if window > LONGEST_SECONDS:
        raise ConfigError(
            f"{name}.window",
            f"must be at most {LONGEST_SECONDS:g} s (about 31,700 years), got {window!r}",
        )
    for field, value in (("limit", limit), ("max_limit", max_limit)):
        if value is None:
            continue
        interval = window / value
        if interval < FINEST_SECONDS:
            raise ConfigError(
                f"{name}.{field}",
                f"{field} / window must be at most {1 / FINEST_SECONDS:g} per second (one per "
                f"nanosecond: no clock times finer), got {field}={value!r} per window={window!r}",
            )
        if interval > LONGEST_SECONDS:
            raise ConfigError(
                f"{name}.{field}",
                f"window / {field} (the time one unit takes to come back) must be at most "
                f"{LONGEST_SECONDS:g} s, got {field}={value!r} per window={window!r}",
            )
    if burst is not None and burst * (window / limit) > LONGEST_SECONDS:
        raise ConfigError(
            f"{name}.burst",
            f"a full burst takes burst * window / limit = {burst * (window / limit):g} s to "
            f"come back, more than {LONGEST_SECONDS:g} s; got burst={burst!r}",
        )


def _rates_of(path: str, text: str) -> list[Rate]:
    try:
        return parse_rates(text)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def scopes_from_rates(text: str, path: str = "rate", **settings: Any) -> tuple[Scope, ...]:
    """Shared scopes from a rate string (``settings``: the other fields of each, such as
    ``algorithm``). One rate makes the scope ``global``, as a config file's ``limit``
    shorthand does; several make one scope each, named for its window
    (``"10/second; 1000/hour"``: ``per_second`` and ``per_hour``). Two rates over one window
    are refused: the lower one always decides.
    """
    rates = _rates_of(path, text)
    if len(rates) == 1:
        return (Scope(SHARED_SCOPE, rates[0].limit, rates[0].window, **settings),)
    by_window: dict[float, Rate] = {}
    for rate in rates:
        other = by_window.setdefault(rate.window, rate)
        if other is not rate:
            raise ConfigError(
                path,
                f"{other.text!r} and {rate.text!r} have one window ({rate.window:g} s): the "
                "lower limit always decides, keep that one",
            )
    return tuple(Scope(r.name, r.limit, r.window, by=None, **settings) for r in rates)


def check_scopes(scopes: Sequence[Scope] | Scope | str) -> tuple[Scope, ...]:
    """A limiter's scopes: at least one, each a Scope, no two of one name; a rate string
    (``"10/second; 1000/hour"``) makes shared scopes (see :func:`scopes_from_rates`)."""
    if isinstance(scopes, str):
        return scopes_from_rates(scopes, "scopes")
    scopes = (scopes,) if isinstance(scopes, Scope) else tuple(scopes)
    if not scopes:
        raise ConfigError("scopes", "a rate limiter needs at least one Scope")
    seen: set[str] = set()
    for i, scope in enumerate(scopes):
        if isinstance(scope, str):
            raise ConfigError(
                f"scopes[{i}]",
                f"must be a Scope, got the string {scope!r}: pass a rate string alone "
                f"(RateLimiter({scope!r})), or make it a scope (Scope.parse({scope!r}, 'user'))",
            )
        if not isinstance(scope, Scope):
            raise ConfigError(f"scopes[{i}]", f"must be a Scope, got {scope!r}")
        if scope.name in seen:
            raise ConfigError(
                f"scopes[{i}].name",
                f"duplicate scope name {scope.name!r}; give each limit its own name and "
                f"share the id with by= (e.g. Scope({scope.name + '_hourly'!r}, ..., "
                f"by={scope.by!r}))",
            )
        seen.add(scope.name)
    return scopes
