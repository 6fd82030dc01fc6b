"""Adaptive limits: an AIMD controller (pure) and the shell that steers a limiter's scopes.

:class:`AdaptiveLimit` is the rule, pure like the algorithms: it takes where a limit stands
(:class:`AdaptiveState`), the time and one signal (a call's outcome, or an attached breaker's
move) and returns where the limit stands next. :class:`AdaptiveScopes` holds the state of each
adaptive scope of one limiter, feeds it the signals (``RateLimiter.record``,
``RateLimiter.attach_breaker``) and, when an effective limit moves, hands the limiter a new
:class:`~._decision.Frame` (token buckets at the new limits) and emits ``limit_changed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import events
from .._breaker._states import PASSING, REFUSING, BreakerState, rank
from .._errors import ConfigError
from .._fork import fork_safe_lock, fork_safe_rlock
from ._algorithms import EPSILON
from ._decision import Frame

if TYPE_CHECKING:
    from .._breaker import CircuitBreaker, Transition
    from ._scope import Scope

__all__ = ["EV_LIMIT", "AdaptiveLimit", "AdaptiveScopes", "AdaptiveState"]

EV_LIMIT = ("buttress", "rate_limiter", "limit_changed")


@dataclass(frozen=True, slots=True)
class AdaptiveState:
    """Where an adaptive limit stands: its value, when it last dropped, whether it is held.

    ``held`` is true while an attached breaker is not closed: the limit may fall, not grow.
    """

    limit: float
    decreased_at: float = -math.inf
    held: bool = False


@dataclass(frozen=True, slots=True)
class AdaptiveLimit:
    """AIMD: a limit that grows additively while calls go well and shrinks multiplicatively.

    * a healthy call adds ``increase / limit``, so a limit in full use grows by about
      ``increase`` per window (TCP's congestion avoidance, one window standing for one RTT);
    * a failed or slow call (``latency >= slow_call``) multiplies it by ``decrease``, at most
      once per ``cooldown`` seconds, so one burst of errors counts once;
    * a breaker turning degraded (or worse within degraded) multiplies it by ``decrease`` at
      once; a breaker opening drops it to ``min_limit``; until the breaker closes again the
      limit does not grow;
    * it always stays within ``[min_limit, max_limit]``.

    >>> aimd = AdaptiveLimit(min_limit=10, max_limit=100, increase=10, decrease=0.5, cooldown=1)
    >>> s = aimd.record(AdaptiveState(100.0), now=0.0, ok=False)
    >>> s.limit, aimd.record(s, now=0.5, ok=False).limit, aimd.record(s, now=1.0, ok=False).limit
    (50.0, 50.0, 25.0)
    """

    min_limit: float
    max_limit: float
    increase: float
    decrease: float = 0.5
    cooldown: float = 1.0
    slow_call: float | None = None

    def _clamp(self, limit: float) -> float:
        return min(self.max_limit, max(self.min_limit, limit))

    def record(
        self, state: AdaptiveState, now: float, ok: bool, latency: float | None = None
    ) -> AdaptiveState:
        """The outcome of one call; returns the new state (the same object if unchanged)."""
        slow = self.slow_call is not None and latency is not None and latency >= self.slow_call
        if ok and not slow:
            if state.held or state.limit >= self.max_limit:
                return state
            grown = self._clamp(state.limit + self.increase / state.limit)
            return AdaptiveState(grown, state.decreased_at, state.held)
        if now - state.decreased_at < self.cooldown:
            return state
        return AdaptiveState(self._clamp(state.limit * self.decrease), now, state.held)

    def breaker_moved(
        self, state: AdaptiveState, now: float, to_state: BreakerState, worse: bool
    ) -> AdaptiveState:
        """An attached breaker moved to ``to_state``; ``worse`` when it became less healthy."""
        if to_state in PASSING:
            return AdaptiveState(state.limit, state.decreased_at, False)
        if to_state in REFUSING:
            return AdaptiveState(self.min_limit, now, True)
        if to_state == BreakerState.DEGRADED and worse:
            return AdaptiveState(self._clamp(state.limit * self.decrease), now, True)
        return AdaptiveState(state.limit, state.decreased_at, True)  # half_open, lighter level


class AdaptiveScope:
    """One adaptive scope of a limiter: its controller and where its limit stands."""

    __slots__ = ("controller", "index", "state")

    def __init__(self, index: int, controller: AdaptiveLimit, state: AdaptiveState) -> None:
        self.index = index  # among the limiter's scopes
        self.controller = controller
        self.state = state


class AdaptiveScopes:
    """The adaptive scopes of one limiter, and the breakers attached to steer them.

    Every change goes through :meth:`_steer`: under one lock it moves the states, rebuilds the
    frame's algorithms whose effective (whole) limit changed, and hands the new frame to
    ``publish``; the events follow, unlocked.
    """

    def __init__(
        self,
        limiter: str,
        scopes: Sequence[Scope],
        frame: Frame,
        publish: Callable[[Frame], None],
        monotonic: Callable[[], float],
    ) -> None:
        self._limiter = limiter
        self._scopes = scopes
        self._frame = frame  # the one published last
        self._publish = publish
        self._monotonic = monotonic
        self.scopes = tuple(
            AdaptiveScope(i, s.controller(), AdaptiveState(float(s.limit)))
            for i, s in enumerate(scopes)
            if s.adaptive
        )
        self._lock = fork_safe_lock()  # the states and the frame; never held over I/O
        # Breakers steering the scopes: (id(breaker), scope index) -> (breaker, detach).
        self._steering: dict[tuple[int, int], tuple[CircuitBreaker, Callable[[], None]]] = {}
        self._steering_lock = fork_safe_rlock()  # a listener may run inside another's read

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def limit(self, index: int) -> float | None:
        """The current limit of the scope at ``index``, or ``None`` if it is not adaptive."""
        for a in self.scopes:
            if a.index == index:
                return a.state.limit
        return None

    def record(self, ok: bool, latency: float | None, index: int | None) -> None:
        """One call's outcome, for every adaptive scope (``index`` None) or the one at ``index``."""
        targets = self._targets(index)
        if not targets:
            return
        now = self._monotonic()
        reason = "error" if not ok else "slow_call"
        self._steer(targets, lambda a: a.controller.record(a.state, now, ok, latency), reason)

    def attach(self, breaker: CircuitBreaker, index: int | None) -> Callable[[], None]:
        """Let ``breaker`` steer the scopes (``RateLimiter.attach_breaker``); returns detach."""
        targets = self._targets(index)
        if not targets:
            raise ConfigError("scope", "attach_breaker needs an adaptive scope to steer")
        steering = self._steering
        mine = id(breaker)

        def held_by_others(a: AdaptiveScope) -> bool:  # (steering lock held)
            return any(
                b is not breaker and b.state not in PASSING
                for (_, index), (b, _) in tuple(steering.items())
                if index == a.index
            )

        def moved(_breaker: CircuitBreaker, t: Transition) -> None:
            worse = rank(t.to_state, t.level) > rank(t.from_state, t.from_level)
            with self._steering_lock:  # one steering decision at a time: none acts on a stale view
                for a in attached:
                    if steering.get((mine, a.index), (None, None))[1] is not detach:
                        continue  # detached meanwhile
                    to_state = t.to_state
                    if to_state in PASSING and held_by_others(a):
                        to_state = BreakerState.HALF_OPEN  # another breaker still holds the limit
                    self._breaker_moved((a,), to_state, worse)

        def detach() -> None:
            with self._steering_lock:
                if steering.get((mine, attached[0].index), (None, None))[1] is not detach:
                    return  # already detached (or replaced by a later attachment)
                for a in attached:
                    del steering[(mine, a.index)]
                unsubscribe()
                for a in attached:
                    if not held_by_others(a):  # nothing holds it any more: it may grow
                        self._breaker_moved((a,), BreakerState.CLOSED, False)

        with self._steering_lock:
            attached = tuple(a for a in targets if (mine, a.index) not in steering)
            if not attached:  # every scope is steered by this breaker already
                return steering[(mine, targets[0].index)][1]
            unsubscribe = breaker.subscribe(moved)
            for a in attached:
                steering[(mine, a.index)] = (breaker, detach)
            state = breaker.state
            if state not in PASSING:
                self._breaker_moved(attached, state, True)
        return detach

    def _breaker_moved(
        self, targets: tuple[AdaptiveScope, ...], to_state: BreakerState, worse: bool
    ) -> None:
        now = self._monotonic()
        reason = "breaker_open" if to_state in REFUSING else "breaker_degraded"
        self._steer(
            targets, lambda a: a.controller.breaker_moved(a.state, now, to_state, worse), reason
        )

    def _targets(self, index: int | None) -> tuple[AdaptiveScope, ...]:
        if index is None:
            return self.scopes
        return tuple(a for a in self.scopes if a.index == index)

    def _steer(
        self,
        targets: tuple[AdaptiveScope, ...],
        step: Callable[[AdaptiveScope], AdaptiveState],
        reason: str,
    ) -> None:
        changes: list[tuple[str, float, float, str]] = []
        with self._lock:
            frame = self._frame
            algorithms = list(frame.algorithms)
            for a in targets:
                old = a.state
                new = step(a)
                if new is old:
                    continue
                a.state = new
                scope = self._scopes[a.index]
                effective = max(a.controller.min_limit, math.floor(new.limit + EPSILON))
                if effective != algorithms[a.index].limit:
                    algorithms[a.index] = scope.build(effective)
                if new.limit < old.limit:
                    changes.append((scope.name, old.limit, new.limit, reason))
                elif new.limit >= a.controller.max_limit > old.limit:
                    changes.append((scope.name, old.limit, new.limit, "recovered"))
            self._frame = Frame.of(frame.meta, tuple(algorithms))
            self._publish(self._frame)
        if changes and events.enabled(EV_LIMIT):
            for scope_name, old_limit, new_limit, why in changes:
                events.emit(
                    EV_LIMIT,
                    {"limit": new_limit, "previous": old_limit},
                    {"limiter": self._limiter, "scope": scope_name, "reason": why},
                )
