"""HTTP response fields for rate-limit decisions.

:func:`rate_limit_headers` renders a :class:`~buttress.Decision` as the ``RateLimit-Policy``
and ``RateLimit`` fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers-11, Structured
Field Values per RFC 9651), one list item per scope of the limiter, plus ``Retry-After`` when
the request was refused.

>>> d = limiter.try_acquire({"user": "u1", "org": "o1"})     # doctest: +SKIP
>>> rate_limit_headers(d)                                     # doctest: +SKIP
{'RateLimit-Policy': '"user";q=100;w=60, "org";q=1000;w=60',
 'RateLimit': '"user";r=99;t=1, "org";r=999;t=1'}
"""

from __future__ import annotations

import base64
import functools
import math

from .ratelimit._decision import Decision, Frame, ScopeStatus

__all__ = ["rate_limit_headers"]


def rate_limit_headers(
    decision: Decision | None,
    *,
    partition_keys: bool = False,
    quota_unit: str | None = None,
    legacy: bool = False,
) -> dict[str, str]:
    """The response header fields for ``decision``, as a ``{name: value}`` dict.

    * ``RateLimit-Policy``: per scope, its name, quota ``q`` (the limit, the current one for an
      adaptive scope) and window ``w`` in seconds (rounded up to a whole second);
    * ``RateLimit``: per scope, ``r`` (units left) and ``t`` (seconds until the scope is back
      to its full quota, rounded up);
    * ``Retry-After``: seconds to wait, rounded up, when the decision refused (left out when
      the request can never fit);
    * ``partition_keys=True`` adds ``pk`` (the caller's id in that scope, base64) so a client
      can tell its partitions apart; off by default, as ids may be private;
    * ``quota_unit`` adds ``qu`` (``"requests"``, ``"content-bytes"``,
      ``"concurrent-requests"``) when cost is not counted in requests;
    * ``legacy=True`` adds the older ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` for
      the deciding scope.

    ``None`` (no limiter decided: ``guard.decision`` of a service without one, or the
    ``exc.decision`` of a ``RateLimitExceeded`` raised by other code) gives no fields: ``{}``.
    """
    if decision is None:
        return {}
    if not isinstance(decision, Decision):
        raise TypeError(
            f"rate_limit_headers: decision must be a Decision or None, got {decision!r}"
        )
    statuses = decision.scopes or (
        ScopeStatus(
            scope=decision.scope,
            key=decision.key,
            algorithm="",
            allowed=decision.allowed,
            limit=decision.limit,
            window=0.0,
            remaining=decision.remaining,
            reset_after=decision.reset_after,
            retry_after=decision.retry_after,
        ),
    )
    policies = []
    states = []
    for s in statuses:
        name = _sf_string(s.scope)
        pk = f";pk=:{_b64(s.key)}:" if partition_keys and s.key is not None else ""
        policies.append(_policy(name, s.limit, s.window, quota_unit) + pk)
        states.append(f"{name};r={max(0, s.remaining)};t={_sf_integer(s.reset_after)}{pk}")
    fields = {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states)}
    if not decision.allowed and math.isfinite(decision.retry_after):
        fields["Retry-After"] = str(_sf_integer(decision.retry_after))
    if legacy:
        fields["X-RateLimit-Limit"] = str(_sf_integer(decision.limit, floor=True))
        fields["X-RateLimit-Remaining"] = str(max(0, decision.remaining))
        fields["X-RateLimit-Reset"] = str(_sf_integer(decision.reset_after))
    return fields


def admitted_fields(decision: Decision) -> tuple[str, str]:
    """``(RateLimit-Policy, RateLimit)``: the two values :func:`rate_limit_headers` gives an
    admitting ``decision`` with its default options.

    Every response a web integration admits carries them, so they are made here without the
    decision's numbers: for a decision made in memory and not read yet, each scope's room is
    judged once from the states the backend read (what ``Decision.scopes`` would say), and
    the scope names and policy come from its limiter's frame, rendered once. Any other
    decision takes :func:`rate_limit_headers`; tests hold the two to the same output.
    """
    details = decision._details
    if details is None or len(details) != 5 or not decision.allowed:
        fields = rate_limit_headers(decision)
        return fields["RateLimit-Policy"], fields["RateLimit"]
    frame: Frame = details[0]
    rendered = _frames.get(id(frame))
    if rendered is None or rendered[0] is not frame:
        rendered = _render_frame(frame)
    _, names, policy = rendered
    if frame.single:  # details: (frame, key, state, now, cost)
        v = frame.algorithms[0].decide(details[2], details[3], details[4])
        return policy, f"{names[0]};r={v[2] if v[2] > 0 else 0};t={_sf_integer(v[3])}"
    now, cost = details[3], details[4]
    states = []
    for name, a, state in zip(names, frame.algorithms, details[2], strict=True):
        v = a.decide(state, now, cost)
        states.append(f"{name};r={v[2] if v[2] > 0 else 0};t={_sf_integer(v[3])}")
    return policy, ", ".join(states)


# Each limiter's frame, rendered: (frame, its scopes' sf-string names, its RateLimit-Policy),
# by the frame's id (the frame is kept, so an id is not taken by another frame while listed).
# A limiter has one frame until an adaptive limit moves; the oldest half goes past the bound.
_frames: dict[int, tuple[Frame, tuple[str, ...], str]] = {}
_FRAMES_KEPT = 512


def _render_frame(frame: Frame) -> tuple[Frame, tuple[str, ...], str]:
    names = tuple(_sf_string(m.name) for m in frame.meta)
    policy = ", ".join(
        _policy(name, a.limit, m.window, None)
        for name, a, m in zip(names, frame.algorithms, frame.meta, strict=True)
    )
    if len(_frames) >= _FRAMES_KEPT:
        for old in list(_frames)[: _FRAMES_KEPT // 2]:
            _frames.pop(old, None)
    rendered = _frames[id(frame)] = (frame, names, policy)
    return rendered


# Scope names and policies are few, and rendered on every response a web integration sends:
# each is made once (a bounded cache: a limit that keeps changing, an adaptive one, evicts).
@functools.lru_cache(maxsize=1024)
def _policy(name: str, limit: float, window: float, quota_unit: str | None) -> str:
    """One scope's ``RateLimit-Policy`` item (``name`` already an sf-string)."""
    policy = f"{name};q={_sf_integer(limit, floor=True)}"
    if quota_unit is not None:
        policy += f";qu={_sf_string(quota_unit)}"
    if window > 0:
        policy += f";w={_sf_integer(window)}"
    return policy


@functools.lru_cache(maxsize=1024)
def _sf_string(value: str) -> str:
    """An RFC 9651 sf-string: printable ASCII, with ``\\`` and ``"`` escaped."""
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError(f"{value!r} cannot be an HTTP structured-field string (ASCII only)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sf_integer(value: float, *, floor: bool = False) -> int:
    """A non-negative sf-integer: seconds round up (never advertise too early), quotas down."""
    if not math.isfinite(value):
        return 999_999_999_999_999  # the largest sf-integer: "not in any foreseeable time"
    n = math.floor(value + 1e-9) if floor else math.ceil(value - 1e-9)
    return min(max(0, n), 999_999_999_999_999)


def _b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode("ascii")
