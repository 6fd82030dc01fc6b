"""Adaptive concurrency: pure algorithms that move a bulkhead's limit from measured latency.

Theory of operation
-------------------
A bulkhead admits a call while fewer than ``limit`` calls are in flight. When a call ends, the
bulkhead reports it with :meth:`AdaptiveConcurrency.record`: its round-trip time, the calls in
flight when it started (itself included) and whether it was dropped (timed out, or refused
downstream). Nothing here reads a clock, sleeps, locks or does I/O; ``now`` is an argument and
the only randomness (a probe's jitter) comes from an injected ``random.Random``.

Rule 1: windows, not single samples. Samples gather in a window that closes once it holds
``max(window, limit / 2)`` calls, about half a round trip of a limit in full use; the
algorithm then moves the limit once, from the window's mean RTT of the calls that were not
dropped and the most calls in flight at any of their starts. One slow call among many moves
nothing.

Rule 2: drops are congestion, counted once per episode. A dropped call multiplies the limit
by ``backoff`` at once, without waiting for the window, unless it started before the last
decrease: the calls already in flight then were admitted under the old limit, and a burst of
timeouts from one overload cuts the limit once, not once per call (TCP's one cut per window).
A window that holds a drop never grows the limit.

Rule 3: growth needs use. A window in which fewer than half the limit was ever in flight
(``2 * inflight < limit``) says nothing about a larger limit, so the limit holds: no growth
at low traffic, and no decrease from a few slow calls on an idle service (drops still count).

Rule 4: a no-load baseline, measured, with a floor apart from the probe level. ``vegas`` and
``gradient2`` compare latency with the RTT of *quiet* calls: calls that started with at most
``ceil(limit * probe_ratio)`` in flight, so met no queue of ours. The baseline is the mean of
the last ``max(3 window, 2 level)`` of them (a mean, not a minimum: the least of many noisy
windows is far below the typical no-load latency). A lightly used service makes quiet calls
all the time; a saturated one makes none, so when ``probe_interval`` windows (jittered by up
to half, so that processes do not probe in step) pass without a fresh baseline, a probe holds
the limit at the probe level until enough quiet calls have ended, leaving out those that end
within three round trips (the first to end are the quickest). The floor ``min_limit`` is
separate: the probe level is never below it, and the limit never falls below it. A baseline
taken under load would carry the queue with it and ratchet the limit up probe after probe
(Netflix concurrency-limits #165); one never refreshed cannot follow a slower release
(camunda#3306).

The algorithms (each window, after Rule 3):

* ``vegas`` (TCP Vegas): estimate the calls queued downstream as
  ``queue = limit * (1 - rtt_noload / rtt)``. With ``l = max(1, floor(log10(limit)))``:
  ``queue <= l`` grows by ``6 l`` (nothing queued: ramp up), ``queue < 3 l`` by ``l``;
  ``queue > 6 l`` shrinks by ``max(l, (queue - 6 l) / 2)`` (half the excess, so a limit far
  too high comes down in a few windows), otherwise it holds. The limit settles a few calls
  above what the service runs at once.
* ``gradient2`` (Netflix Gradient2, with the fixes of its known pitfalls): ``gradient =
  clamp(tolerance * rtt_noload / rtt, 0.5, 1)``; the limit moves to ``limit * gradient``, plus
  ``queue`` (``max(4, sqrt(limit))`` unless set) only when the gradient is 1 (#134's fix),
  smoothed: ``limit += smoothing * (target - limit)``. The baseline is the measured no-load
  RTT (Rule 4), not an average of recent RTTs: an average learns the
  overload it should measure, and the limit then climbs under modest overload or steady
  timeouts (#134, #137). The limit settles where latency is ``tolerance`` times the baseline.
* ``aimd``: a window whose mean RTT is at least ``slow_call`` shrinks the limit by
  ``backoff``; otherwise it grows by ``increase`` (per window: about one round trip). It
  reads no baseline, so it never probes; without ``slow_call`` only drops stop its growth.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, get_args

from .._errors import ConfigError
from .._validate import in_interval, int_between

__all__ = [
    "AIMD",
    "AdaptiveConcurrency",
    "AdaptiveSnapshot",
    "AlgorithmName",
    "Gradient2",
    "Vegas",
    "Window",
]

AlgorithmName = Literal["gradient2", "vegas", "aimd"]
ALGORITHMS: tuple[str, ...] = get_args(AlgorithmName)


@dataclass(frozen=True, slots=True)
class Window:
    """One closed window of samples (Rule 1), as an algorithm sees it."""

    samples: int  # calls that ran to an outcome, dropped ones included
    drops: int
    rtt: float | None  # mean RTT of the calls not dropped; None when every call was dropped
    inflight: int  # the most calls in flight when one of the window's calls started


class Algorithm(Protocol):
    """What :class:`AdaptiveConcurrency` asks of an algorithm."""

    probes: bool  # whether it reads a no-load baseline, refreshed by probes (Rule 4)

    def update(self, limit: float, window: Window, rtt_noload: float | None) -> float:
        """The limit after ``window`` (unclamped); called only for windows in use (Rule 3)."""
        ...

    def inputs(self) -> dict[str, float | None]:
        """What the last update read and decided, for the snapshot."""
        ...


# -- the algorithms ---------------------------------------------------------------------------


class Vegas:
    """TCP Vegas on windows: keep between ``3 l`` and ``6 l`` calls queued downstream."""

    probes = True

    def __init__(self, *, alpha: float = 3.0, beta: float = 6.0) -> None:
        # 3 and 6 queued calls (times log10 of the limit): enough queue that the service is
        # never idle for want of work, little enough that latency rises by a few calls' worth.
        self.alpha = alpha
        self.beta = beta
        self.queue: float | None = None
        self.rtt: float | None = None

    def update(self, limit: float, window: Window, rtt_noload: float | None) -> float:
        if window.rtt is None or rtt_noload is None:
            return limit
        self.rtt = window.rtt
        queue = self.queue = limit * (1.0 - rtt_noload / window.rtt)
        step = max(1.0, math.floor(math.log10(max(limit, 1.0))))
        alpha, beta = self.alpha * step, self.beta * step
        if queue <= step:
            return limit + beta
        if queue < alpha:
            return limit + step
        if queue > beta:
            return limit - max(step, (queue - beta) / 2)
        return limit

    def inputs(self) -> dict[str, float | None]:
        return {"rtt": self.rtt, "queue": self.queue}


class Gradient2:
    """Gradient2 against a probed baseline: settle where latency is ``tolerance`` x no-load."""

    probes = True

    def __init__(
        self, *, tolerance: float = 1.5, smoothing: float = 0.2, queue: float | None = None
    ) -> None:
        # tolerance 1.5 and smoothing 0.2 are Gradient2's defaults: latency may rise by half
        # before the limit falls, which keeps the service busy through the noise of real
        # latencies. The queue (the growth while latency is within tolerance) is
        # max(4, sqrt(limit)), Gradient v1's rule, rather than Gradient2's fixed 4 (#189): it
        # moves once per window, not once per sample, and a fixed 4 takes thousands of
        # samples to climb to a few hundred.
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.queue = queue
        self.gradient: float | None = None
        self.rtt: float | None = None

    def update(self, limit: float, window: Window, rtt_noload: float | None) -> float:
        if window.rtt is None or rtt_noload is None:
            return limit
        self.rtt = window.rtt
        gradient = self.gradient = max(0.5, min(1.0, self.tolerance * rtt_noload / window.rtt))
        queue = self.queue if self.queue is not None else max(4.0, math.sqrt(limit))
        target = limit * gradient + (queue if gradient >= 1.0 else 0.0)
        return limit + self.smoothing * (target - limit)

    def inputs(self) -> dict[str, float | None]:
        return {"rtt": self.rtt, "gradient": self.gradient}


class AIMD:
    """Additive increase, multiplicative decrease on slow windows (drops: Rule 2)."""

    probes = False

    def __init__(
        self, *, increase: float = 1.0, backoff: float = 0.9, slow_call: float | None = None
    ) -> None:
        self.increase = increase
        self.backoff = backoff
        self.slow_call = slow_call
        self.rtt: float | None = None

    def update(self, limit: float, window: Window, rtt_noload: float | None) -> float:
        self.rtt = window.rtt
        if self.slow_call is not None and window.rtt is not None and window.rtt >= self.slow_call:
            return limit * self.backoff
        return limit + self.increase

    def inputs(self) -> dict[str, float | None]:
        return {"rtt": self.rtt}


# -- the public object ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdaptiveSnapshot:
    """Where an adaptive limit stands, and what its algorithm last read."""

    name: str
    algorithm: str
    limit: int
    min_limit: int
    max_limit: int
    samples: int  # calls recorded
    drops: int  # of which dropped
    windows: int  # windows closed (Rule 1)
    probing: bool  # the limit is held at the probe level (Rule 4)
    rtt_noload: float | None  # the baseline (vegas, gradient2)
    rtt: float | None  # the last window's mean RTT
    queue: float | None  # vegas: the last queue estimate
    gradient: float | None  # gradient2: the last gradient

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Every setting, by algorithm: (its interval, its default). None: not set (aimd's slow_call:
# latency never cuts; gradient2's queue: max(4, sqrt(limit))). Why each default is what it is
# is said where it is used.
_SHARED: dict[str, tuple[str, float | None]] = {
    "window": ("[1, 100000]", 10),
    "backoff": ("(0, 1)", 0.9),
    "probe_interval": ("[2, inf)", 500),
    "probe_ratio": ("(0, 1)", 0.5),
}
_TUNING: dict[str, dict[str, tuple[str, float | None]]] = {
    "vegas": {"alpha": ("(0, inf)", 3.0), "beta": ("(0, inf)", 6.0)},
    "gradient2": {
        "tolerance": ("[1, inf)", 1.5),
        "smoothing": ("(0, 1]", 0.2),
        "queue": ("[0, inf)", None),
    },
    "aimd": {"increase": ("(0, inf)", 1.0), "slow_call": ("(0, inf)", None)},
}


def _settings(algorithm: str, tuning: dict[str, float | None]) -> dict[str, float | None]:
    """The algorithm's settings and the shared ones: the defaults, overridden by ``tuning``,
    each checked against its interval."""
    known = {**_SHARED, **_TUNING[algorithm]}
    settings = {key: default for key, (_, default) in known.items()}
    for key, value in tuning.items():
        if key not in known:
            raise ConfigError(key, f"is not a setting of {algorithm!r}; it takes {sorted(known)}")
        if value is not None or known[key][1] is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(key, f"must be a number, got {value!r}")
            in_interval(key, value, known[key][0])
        settings[key] = value
    return settings


def _number(settings: dict[str, float | None], key: str) -> float:
    value = settings[key]
    if value is None:  # only the settings whose default is None may be None
        raise ConfigError(key, "must be a number")
    return float(value)


class AdaptiveConcurrency:
    """A concurrency limit that follows the latency of the calls it lets through.

    Args:
        name: what the limit guards (the bulkhead's name), for snapshots.
        algorithm: ``"gradient2"`` (default), ``"vegas"`` or ``"aimd"``; the rules are in this
            module's docstring.
        initial: the limit before any sample.
        min_limit: the floor; the limit never falls below it.
        max_limit: the ceiling.
        rng: the source of the probes' jitter (a seeded one makes runs repeatable).
        **tuning: the algorithm's settings and the shared ones: ``window`` (least samples per
            window, 10), ``backoff`` (a drop's cut, 0.9), ``probe_interval`` (windows without
            a fresh baseline before a probe, 500), ``probe_ratio`` (the probe level as a share
            of the limit, 0.5); vegas ``alpha`` 3, ``beta`` 6; gradient2 ``tolerance`` 1.5,
            ``smoothing`` 0.2, ``queue`` None (``max(4, sqrt(limit))``); aimd ``increase`` 1,
            ``slow_call`` None (seconds; None: only drops cut).

    Raises:
        ConfigError: naming the setting that is wrong.
    """

    def __init__(
        self,
        name: str,
        *,
        algorithm: AlgorithmName = "gradient2",
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        rng: random.Random | None = None,
        **tuning: float | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty str, got {name!r}")
        if algorithm not in ALGORITHMS:
            raise ConfigError("algorithm", f"must be one of {ALGORITHMS}, got {algorithm!r}")
        int_between("min_limit", min_limit, 1, 1_000_000)
        int_between("max_limit", max_limit, min_limit, 1_000_000)
        int_between("initial", initial, min_limit, max_limit)
        settings = _settings(algorithm, tuning)
        self.name = name
        self.algorithm: AlgorithmName = algorithm
        self.min_limit = min_limit
        self.max_limit = max_limit
        # Ten samples: a window's mean of ten lognormal latencies is within about a sixth of
        # the true mean, and a limit in full use fills it in a fraction of one round trip.
        self._window = int(_number(settings, "window"))
        self._backoff = _number(settings, "backoff")  # a drop's cut: 0.9, AIMD's and TCP's
        # One forced probe per 500 windows (about 250 round trips of a limit in full use):
        # a probe holds half the limit for about six round trips, so this costs about one
        # per cent of throughput, and a drifting no-load latency is followed within seconds.
        self._probe_interval = _number(settings, "probe_interval")
        self._probe_ratio = _number(settings, "probe_ratio")
        self._rng = rng if rng is not None else random.Random()
        self._algo: Algorithm
        if algorithm == "vegas":
            alpha, beta = _number(settings, "alpha"), _number(settings, "beta")
            if beta < alpha:
                raise ConfigError("beta", f"must be >= alpha ({alpha!r}), got {beta!r}")
            self._algo = Vegas(alpha=alpha, beta=beta)
        elif algorithm == "gradient2":
            queue = settings["queue"]
            self._algo = Gradient2(
                tolerance=_number(settings, "tolerance"),
                smoothing=_number(settings, "smoothing"),
                queue=None if queue is None else float(queue),
            )
        else:
            self._algo = AIMD(
                increase=_number(settings, "increase"),
                backoff=self._backoff,
                slow_call=None if settings["slow_call"] is None else float(settings["slow_call"]),
            )
        self._value = float(initial)  # the limit, unrounded (a probe holds it lower: Rule 4)
        self._epoch = -math.inf  # when the limit last fell (Rule 2)
        # The open window (Rule 1).
        self._count = 0
        self._drops_in = 0
        self._rtt_sum = 0.0
        self._rtt_n = 0
        self._inflight = 0
        self._rtt: float | None = None  # the last window's mean RTT
        # The baseline (Rule 4): quiet calls' RTTs, gathered until there are enough.
        self._rtt_noload: float | None = None
        self._quiet_sum = 0.0
        self._quiet_n = 0
        self._probing = False
        self._settled = -math.inf  # a probe measures calls that end after this
        self._next_probe = 1  # the window after which a probe is due
        # Totals.
        self._samples = 0
        self._drops = 0
        self._windows = 0

    @property
    def limit(self) -> int:
        """The current limit: at least ``min_limit``, at most ``max_limit``."""
        limit = max(self.min_limit, min(self.max_limit, int(self._value)))
        return min(limit, self._level()) if self._probing else limit

    def _level(self) -> int:
        """The probe level: calls started with at most this many in flight are quiet."""
        return max(self.min_limit, math.ceil(self._value * self._probe_ratio))

    def record(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        """One call that ran to an outcome; returns the new limit.

        ``rtt`` is its round-trip time in seconds, ``inflight`` the calls in flight when it
        started (itself included), ``dropped`` whether it timed out or was refused downstream.
        """
        self._samples += 1
        if dropped:
            self._drops += 1
            self._drops_in += 1
            if now - rtt >= self._epoch:  # Rule 2: one cut per episode
                self._cut(now, self._value * self._backoff)
        else:
            self._rtt_sum += rtt
            self._rtt_n += 1
            if self._algo.probes and inflight <= self._level() and now >= self._settled:
                self._quiet(rtt)
        self._count += 1
        self._inflight = max(self._inflight, inflight)
        if self._count >= max(self._window, self._value / 2):
            self._close(now)
        return self.limit

    def _quiet(self, rtt: float) -> None:
        """A call that started with few in flight, so it met no queue of ours (Rule 4)."""
        self._quiet_sum += rtt
        self._quiet_n += 1
        if self._quiet_n >= max(3 * self._window, 2 * self._level()):
            self._rtt_noload = self._quiet_sum / self._quiet_n
            self._quiet_sum, self._quiet_n = 0.0, 0
            self._probing = False
            self._next_probe = self._windows + self._probe_due()

    def _close(self, now: float) -> None:
        window = Window(
            self._count,
            self._drops_in,
            self._rtt_sum / self._rtt_n if self._rtt_n else None,
            self._inflight,
        )
        self._count = self._drops_in = self._rtt_n = self._inflight = 0
        self._rtt_sum = 0.0
        self._windows += 1
        if window.rtt is not None:
            self._rtt = window.rtt
        if self._probing or 2 * window.inflight < self._value:
            return  # Rule 3: an idle window decides nothing, and needs no baseline
        moved = self._algo.update(self._value, window, self._rtt_noload)
        if moved < self._value:
            self._cut(now, moved)
        elif not window.drops:  # Rule 2: a window that dropped calls never grows the limit
            self._value = min(float(self.max_limit), moved)
        if self._algo.probes and self._windows >= self._next_probe and not window.drops:
            # No quiet calls lately: make some. Calls admitted from now on meet at most the
            # probe level of ours; those that end within three round trips are left out, as
            # the first to end are the quickest.
            self._probing = True
            self._quiet_sum, self._quiet_n = 0.0, 0
            self._settled = now + 3 * (self._rtt or 0.0)

    def _cut(self, now: float, value: float) -> None:
        self._value = max(float(self.min_limit), value)
        self._epoch = now

    def _probe_due(self) -> int:
        return max(1, round(self._probe_interval * self._rng.uniform(0.5, 1.0)))

    def snapshot(self) -> AdaptiveSnapshot:
        """The limit, its bounds and what its algorithm last read."""
        inputs = self._algo.inputs()
        return AdaptiveSnapshot(
            name=self.name,
            algorithm=self.algorithm,
            limit=self.limit,
            min_limit=self.min_limit,
            max_limit=self.max_limit,
            samples=self._samples,
            drops=self._drops,
            windows=self._windows,
            probing=self._probing,
            rtt_noload=self._rtt_noload,
            rtt=inputs.get("rtt"),
            queue=inputs.get("queue"),
            gradient=inputs.get("gradient"),
        )

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrency({self.name!r}, algorithm={self.algorithm!r}, limit={self.limit})"
        )
