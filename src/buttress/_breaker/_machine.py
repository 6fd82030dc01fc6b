"""The circuit breaker's state machine: pure, no I/O, no clock, no lock.

Theory of operation
-------------------
Outcomes (success, failure, slow) are counted in a sliding window of ``buckets`` time buckets.
After every outcome that could make things worse, :meth:`BreakerMachine._evaluate` turns the
window into one *severity* ``s``: for each signal (failure count, failure rate, slow-call rate)
the position of its value inside its degraded band, ``(value - degrade_at) / (open_at -
degrade_at)``; the highest wins and names the reason.

* ``s < 0``: closed (or back to closed from degraded, reason ``recovered``);
* ``0 <= s < 1``: degraded, ``light`` / ``medium`` / ``heavy`` for each third of the band
  (a level is left downwards only ``level_hysteresis`` below its floor, so a signal hovering
  on a boundary does not flap);
* ``s >= 1`` (or ``consecutive_failure_threshold`` failures in a row): open.

Open lasts ``reset_timeout`` (growing per failed recovery when configured, +/-
``reset_timeout_jitter``: 10% by default); the first admission after that moves to half_open,
which admits ``half_open_max_calls`` probes and closes once ``probes_needed`` succeed, or
reopens once that has become impossible.

Rule 1: time-driven moves (open → half_open, expired probes, window expiry in degraded) are
applied lazily by :meth:`poll`, called on admission and on every read; nothing runs by itself.

Rule 2: every admission carries the ``generation`` it was admitted in. The generation changes
whenever the breaker opens, half-opens, closes from half_open, or is moved by hand; closed and
degraded share one generation (one window). An outcome from an older generation is counted in
the lifetime totals and otherwise ignored: it never moves the state.

Rule 3: ``FORCED_OPEN`` and ``DISABLED`` are only left by :meth:`reset`.

The shell (``_breaker.py``) holds a lock around every method here and emits the transitions
this machine queues in :attr:`pending`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .._priority import CRITICAL, NORMAL, SHEDDABLE
from ._config import BreakerConfig
from ._states import BreakerState, DegradationLevel, Transition, level_rank

CLOSED = BreakerState.CLOSED
DEGRADED = BreakerState.DEGRADED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED

LIGHT = DegradationLevel.LIGHT
MEDIUM = DegradationLevel.MEDIUM
HEAVY = DegradationLevel.HEAVY


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call may run. ``probe`` is its half-open permit id, 0 when it is not a probe."""

    generation: int
    probe: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A call may not run. ``reason``: ``open``, ``forced_open``, ``half_open_full``, ``shed``."""

    state: BreakerState
    level: DegradationLevel | None
    reason: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class MachineStats:
    """The machine's numbers at one instant, named as the breaker's snapshot names them (the
    shell adds its name and fault injection: :class:`~buttress.BreakerSnapshot`)."""

    state: BreakerState
    degradation_level: DegradationLevel | None
    # The window: outcomes in it now.
    failure_count: int
    success_count: int
    call_count: int
    slow_call_count: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    recovery_attempts: int
    retry_after: float | None
    probes_in_flight: int
    generation: int
    times_opened: int
    # Since the breaker was made.
    total_successes: int
    total_failures: int
    total_ignored: int
    total_cancelled: int
    total_rejected: int
    total_shed: int
    total_stale: int


# A severity of exactly one third (two thirds) is medium (heavy); the slack absorbs rounding,
# e.g. (0.4 - 0.2) / (0.5 - 0.2) comes out a hair above 2/3 and (0.3 - 0.2) / 0.3 a hair below.
_THIRD = 1.0 / 3.0 - 1e-9
_TWO_THIRDS = 2.0 / 3.0 - 1e-9


_FLOOR: dict[DegradationLevel, float] = {LIGHT: 0.0, MEDIUM: _THIRD, HEAVY: _TWO_THIRDS}


def _landing(
    current: DegradationLevel, severity: float, hysteresis: float
) -> DegradationLevel | None:
    """Where a fall from ``current`` to ``severity`` stops: the highest level at or below
    ``current`` whose floor less ``hysteresis`` is at or below ``severity``, else closed."""
    for level in (HEAVY, MEDIUM, LIGHT):
        if level_rank(level) <= level_rank(current) and severity >= _FLOOR[level] - hysteresis:
            return level
    return None


def level_for(severity: float) -> DegradationLevel:
    """The degradation level for a severity in ``[0, 1)``: thirds of the band."""
    if severity < _THIRD:
        return LIGHT
    if severity < _TWO_THIRDS:
        return MEDIUM
    return HEAVY


class BreakerMachine:
    """The breaker's decisions, given ``now``. Not thread-safe: the shell locks around it."""

    __slots__ = (
        "_calls",
        "_cur",
        "_fails",
        "_harmless_failures",
        "_hc_last",
        "_hc_running",
        "_head",
        "_hysteresis",
        "_inv_width",
        "_n",
        "_plain",
        "_probe_failed",
        "_probe_ok",
        "_probe_seq",
        "_probes",
        "_rng",
        "_slow_at",
        "_slows",
        "_warm_credit",
        "_warm_from",
        "_warm_until",
        "_width",
        "bucket_end",
        "cancelled",
        "config",
        "consecutive",
        "failures",
        "fast_gen",
        "fleet_opened",
        "fleet_recovered",
        "generation",
        "ignored",
        "level",
        "open_until",
        "pending",
        "probe_cap",
        "recovery_attempts",
        "rejected",
        "shed",
        "stale",
        "state",
        "successes",
        "times_opened",
        "w_calls",
        "w_failures",
        "w_slow",
    )

    def __init__(self, config: BreakerConfig, rng: random.Random, now: float = 0.0) -> None:
        self.config = config
        self._rng = rng
        self.state = CLOSED
        self.level: DegradationLevel | None = None
        self.generation = 1
        # ``fast_gen`` is the generation while a plain success needs no decision (closed),
        # else -1: the shell reads this one attribute to take its lock-free admission path.
        self.fast_gen = -1
        self.pending: list[Transition] = []

        self._size_window(now)
        self.consecutive = 0
        self._plain = config.slow_call_duration is None and config.failure_result is None
        self._derive()

        self.open_until = 0.0
        self.recovery_attempts = 0
        self._probes: dict[int, float] = {}
        self._probe_seq = 0
        self._probe_ok = 0
        self._probe_failed = 0
        self._hc_running = False
        self._hc_last = -math.inf
        # Slow start after recovery: while now < _warm_until (0: not warming), a share of
        # calls growing from slow_start_initial is admitted, counted as credit (see _warming).
        self._warm_from = 0.0
        self._warm_until = 0.0
        self._warm_credit = 0.0

        self.successes = 0
        self.failures = 0
        self.ignored = 0
        self.cancelled = 0
        self.rejected = 0
        self.shed = 0
        self.stale = 0
        self.times_opened = 0
        # A fleet (``buttress._fleet``) may open this breaker: then its half-open probes are
        # the permits the fleet granted (``probe_cap``), and a recovery is reported once.
        self.fleet_opened = False
        self.fleet_recovered = False
        self.probe_cap: float = math.inf
        self._refresh_fast()

    # -- admission ---------------------------------------------------------------------------

    def admit(self, now: float, priority: int = NORMAL) -> Admitted | Refused:
        """Decide whether a call may run now (``priority``: ``_priority.py``; a bool means
        ``critical``). Degraded, a critical call is never shed, a sheddable one always, a
        normal one with the level's shed probability."""
        st = self.state
        if st is CLOSED:
            if self._warm_until:
                return self._warming(now, priority)
            return Admitted(self.generation, 0)
        if st is DISABLED:
            return Admitted(self.generation, 0)
        if st is FORCED_OPEN:
            self.rejected += 1
            return Refused(FORCED_OPEN, None, "forced_open", None)
        self.poll(now)
        st = self.state
        if st is CLOSED:
            return (
                self._warming(now, priority) if self._warm_until else Admitted(self.generation, 0)
            )
        if st is DEGRADED:
            level = self.level
            assert level is not None
            if priority != CRITICAL and (
                priority == SHEDDABLE or self._rng.random() < self.config.shed_probability[level]
            ):
                self.rejected += 1
                self.shed += 1
                # Until the window next moves (the bucket ends), as the window itself reckons.
                bucket_end = (int(now * self._inv_width) + 1) * self._width
                return Refused(DEGRADED, level, "shed", max(0.0, bucket_end - now))
            return Admitted(self.generation, 0)
        if st is OPEN:
            self.rejected += 1
            return Refused(OPEN, None, "open", max(0.0, self.open_until - now))
        # HALF_OPEN
        cfg = self.config
        cap = cfg.half_open_max_calls
        if self.probe_cap < cap:
            cap = int(self.probe_cap)
        if len(self._probes) + self._probe_ok + self._probe_failed < cap:
            self._probe_seq += 1
            self._probes[self._probe_seq] = now
            return Admitted(self.generation, self._probe_seq)
        self.rejected += 1
        oldest = min(self._probes.values(), default=now)
        return Refused(
            HALF_OPEN, None, "half_open_full", max(0.0, oldest + cfg.probe_timeout - now)
        )

    def _warming(self, now: float, priority: int) -> Admitted | Refused:
        """Slow start: the share of calls admitted ``t`` seconds after recovering is
        ``initial + (1 - initial) * t / slow_start``. Each normal or sheddable call adds that
        share to a credit and runs when the credit reaches one call, so over any stretch the
        admitted calls are the offered ones times the ramp, to within one call (no
        randomness). Critical calls always run."""
        if now >= self._warm_until:
            self._warm_until = 0.0
            self._refresh_fast()
            return Admitted(self.generation, 0)
        if priority == CRITICAL:
            return Admitted(self.generation, 0)
        cfg = self.config
        initial = cfg.slow_start_initial
        share = initial + (1.0 - initial) * max(0.0, now - self._warm_from) / cfg.slow_start
        credit = self._warm_credit + share
        if credit >= 1.0:
            self._warm_credit = credit - 1.0
            return Admitted(self.generation, 0)
        self._warm_credit = credit
        self.rejected += 1
        self.shed += 1
        return Refused(CLOSED, None, "slow_start", None)

    def admit_again(self, now: float, priority: int = NORMAL) -> Admitted | Refused:
        """:meth:`admit` for a call refused a moment ago, once a passing health check has
        moved the state: the call is counted once, by this decision."""
        self.rejected -= 1
        return self.admit(now, priority)

    # -- outcomes ------------------------------------------------------------------------------

    def on_success(self, generation: int, probe: int, now: float, duration: float | None) -> None:
        self.successes += 1
        if generation != self.generation:
            self.stale += 1
            return
        if probe:
            if self._probes.pop(probe, None) is not None:
                self._probe_ok += 1
                self._judge_probes(now)
            return
        b = int(now * self._inv_width)
        rolled = b != self._head
        if rolled:
            self._roll(b)
        i = self._cur
        self._calls[i] += 1
        self.w_calls += 1
        self.consecutive = 0
        sd = self._slow_at
        slow = sd is not None and duration is not None and duration >= sd
        if slow:
            self._slows[i] += 1
            self.w_slow += 1
        # While closed, a success can only raise a signal by being slow, by bringing the window
        # up to minimum_calls, or by coming in a new bucket (old successes expiring raise the
        # failure rate); otherwise closed stays closed without a look.
        st = self.state
        if st is DEGRADED or (
            st is CLOSED and (slow or rolled or self.w_calls == self.config.minimum_calls)
        ):
            self._evaluate(now)
        if self.state is CLOSED and self.fast_gen < 0:
            self._refresh_fast()

    def add_successes(self, current: int, stale: int, now: float) -> None:
        """Count successes the shell batched while closed, into the current bucket.

        The shell batches fast, plain successes (closed state, same time bucket) and hands them
        over before any other operation, so they land in the bucket they happened in.
        ``current`` is how many were admitted in this generation, ``stale`` in older ones.
        """
        self.successes += current + stale
        self.stale += stale
        if not current:
            return
        before = self.w_calls
        self._calls[self._cur] += current
        self.w_calls += current
        self.consecutive = 0
        minimum = self.config.minimum_calls
        if self.state is DEGRADED or (self.state is CLOSED and before < minimum <= self.w_calls):
            self._evaluate(now)
        if self.state is CLOSED and self.fast_gen < 0:
            self._refresh_fast()

    def on_failure(self, generation: int, probe: int, now: float, duration: float | None) -> None:
        self.failures += 1
        if generation != self.generation:
            self.stale += 1
            return
        if probe:
            if self._probes.pop(probe, None) is not None:
                self._probe_failed += 1
                self._judge_probes(now)
            return
        b = int(now * self._inv_width)
        if b != self._head:
            self._roll(b)
        i = self._cur
        self._calls[i] += 1
        self._fails[i] += 1
        self.w_calls += 1
        self.w_failures += 1
        self.consecutive += 1
        if self.state is not DISABLED:
            self._evaluate(now)
            if self.state is CLOSED:
                self._refresh_fast()

    def on_neutral(
        self, generation: int, probe: int, now: float, *, cancelled: bool | None
    ) -> None:
        """An ignored exception, a cancellation, or (``None``) a call that never ran: counts
        for nothing (beyond its own tally), frees a probe permit."""
        if cancelled:
            self.cancelled += 1
        elif cancelled is not None:
            self.ignored += 1
        if probe and generation == self.generation:
            self._probes.pop(probe, None)

    # -- time ----------------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        """Apply every move that the passing of time alone has made due."""
        st = self.state
        if st is OPEN:
            if now >= self.open_until:
                self._half_open(now, "reset_timeout")
        elif st is HALF_OPEN:
            timeout = self.config.probe_timeout
            expired = [p for p, t in self._probes.items() if now - t >= timeout]
            for p in expired:
                del self._probes[p]
                self._probe_failed += 1
            if expired:
                self._judge_probes(now)
        elif st is DEGRADED or st is CLOSED:
            # A new bucket forgets the oldest: fewer calls may mean a higher failure rate.
            b = int(now * self._inv_width)
            if b != self._head:
                self._roll(b)
                self._evaluate(now)

    # -- manual control --------------------------------------------------------------------

    def force_open(self, now: float) -> None:
        if self.state is not FORCED_OPEN:
            self._move(FORCED_OPEN, None, "forced_open", now)

    def disable(self, now: float) -> None:
        if self.state is not DISABLED:
            self._move(DISABLED, None, "disabled", now)

    def reset(self, now: float) -> None:
        """Back to closed with an empty window, whatever the state (manual ones included)."""
        self._clear_window(now)
        self.recovery_attempts = 0
        self._warm_until = 0.0  # an operator's reset lets the whole load in at once
        self.fleet_opened = False
        self.probe_cap = math.inf
        self._move(CLOSED, None, "reset", now)

    # -- the fleet (``buttress._fleet``): told at each sync, never on the call path ----------

    def fleet_open(self, now: float, until: float) -> None:
        """The fleet opened until ``until``: open (window cleared, so what was counted before
        the fleet opened is not reported again), its half-open probes granted by the fleet.
        Manual states stay as they are."""
        st = self.state
        if st is FORCED_OPEN or st is DISABLED:
            return
        self._clear_window(now)
        self.fleet_opened = True
        self.fleet_recovered = False
        self.probe_cap = 0
        if st is OPEN:
            self.open_until = max(self.open_until, until)
            return
        self._probes.clear()
        self.open_until = until
        self._hc_last = now
        self.times_opened += 1
        self._move(OPEN, None, "fleet_open", now)

    def fleet_grant(self, permits: int) -> None:
        """The fleet granted ``permits`` more half-open probes."""
        if self.fleet_opened and self.probe_cap != math.inf:
            self.probe_cap += permits

    def fleet_closed(self, now: float) -> None:
        """The fleet recovered (another process's probes succeeded): a breaker the fleet
        opened closes as if its own probes had; one that opened by itself stays."""
        if not self.fleet_opened:
            return
        self.fleet_opened = False
        self.probe_cap = math.inf
        if self.state is OPEN or self.state is HALF_OPEN:
            self._probes.clear()
            self._clear_window(now)
            self._warm_up(now)
            self._move(CLOSED, None, "fleet_recovered", now)
            self.recovery_attempts = 0

    def fleet_lost(self) -> None:
        """The fleet cannot be reached: the breaker probes on its own again."""
        self.probe_cap = math.inf

    def fleet_report(self, now: float) -> tuple[int, int, bool, int]:
        """``(calls, failures, recovered, probes_wanted)`` for the fleet: the window as of
        ``now``, whether probes closed a fleet opening since the last report, and the probes
        still wanted while half open on the fleet's permits."""
        self.poll(now)
        b = int(now * self._inv_width)
        if b != self._head:
            self._roll(b)
        recovered, self.fleet_recovered = self.fleet_recovered, False
        wanted = 0
        if self.state is HALF_OPEN and self.fleet_opened and self.probe_cap != math.inf:
            wanted = max(0, self.config.half_open_max_calls - int(self.probe_cap))
        return self.w_calls, self.w_failures, recovered, wanted

    # -- health check while open -------------------------------------------------------------

    def health_check_begin(self, now: float, interval: float) -> int | None:
        """If a health check is due, claim it and return the generation it is for."""
        self.poll(now)
        if self.state is OPEN and not self._hc_running and now - self._hc_last >= interval:
            self._hc_running = True
            self._hc_last = now
            return self.generation
        return None

    def health_check_end(self, generation: int, now: float, ok: bool) -> None:
        self._hc_running = False
        if ok and self.state is OPEN and generation == self.generation:
            self._half_open(now, "health_check")

    # -- reading ---------------------------------------------------------------------------------

    def stats(self, now: float) -> MachineStats:
        self.poll(now)  # closed or degraded: rolls the window to now and judges it
        b = int(now * self._inv_width)
        if b != self._head:
            self._roll(b)  # any other state: the window is only shown, not judged
        calls = self.w_calls
        retry = None
        if self.state is OPEN:
            retry = max(0.0, self.open_until - now)
        failures = self.w_failures
        return MachineStats(
            state=self.state,
            degradation_level=self.level,
            failure_count=failures,
            success_count=calls - failures,
            call_count=calls,
            slow_call_count=self.w_slow,
            failure_rate=failures / calls if calls else 0.0,
            slow_call_rate=self.w_slow / (calls - failures) if calls > failures else 0.0,
            consecutive_failures=self.consecutive,
            recovery_attempts=self.recovery_attempts,
            retry_after=retry,
            probes_in_flight=len(self._probes),
            generation=self.generation,
            times_opened=self.times_opened,
            total_successes=self.successes,
            total_failures=self.failures,
            total_ignored=self.ignored,
            total_cancelled=self.cancelled,
            total_rejected=self.rejected,
            total_shed=self.shed,
            total_stale=self.stale,
        )

    def severity(self) -> tuple[float, str]:
        """The window's severity and the signal behind it (see the module docstring)."""
        cfg = self.config
        best, why = -1.0, ""
        f = self.w_failures
        ft = cfg.failure_threshold
        if ft is not None:
            if f >= ft:
                return 1.0, "failure_count"
            dt = cfg.degradation_threshold
            if dt is not None:
                best, why = (f - dt) / (ft - dt), "failure_count"
        calls = self.w_calls
        if calls >= cfg.minimum_calls:
            s = _band(f / calls, cfg.degradation_rate_threshold, cfg.failure_rate_threshold)
            if s >= 1.0:
                return 1.0, "failure_rate"
            if s > best:
                best, why = s, "failure_rate"
            successes = calls - f
            if self._slow_at is not None and successes:
                s = _band(
                    self.w_slow / successes,
                    cfg.slow_degradation_rate_threshold,
                    cfg.slow_call_rate_threshold,
                )
                if s >= 1.0:
                    return 1.0, "slow_call_rate"
                if s > best:
                    best, why = s, "slow_call_rate"
        ct = cfg.consecutive_failure_threshold
        if ct is not None and self.consecutive >= ct:
            return 1.0, "consecutive_failures"
        return best, why

    def reconfigure(self, config: BreakerConfig, now: float, plain: bool) -> None:
        """Decide by ``config`` from now on, keeping what happened: the state, its level, when
        an open breaker may probe, and the window's counts (the window starts again, empty, only
        when its ``window`` or ``buckets`` changed: its buckets no longer line up). The new
        thresholds are applied at the next outcome, as any change of the window's counts is.
        ``plain``: the shell's fault injection is off (see :meth:`set_plain`)."""
        old = self.config
        self.config = config
        if (config.window, config.buckets) != (old.window, old.buckets):
            self._size_window(now)
        self._derive()
        self.set_plain(plain)

    def _size_window(self, now: float) -> None:
        """An empty window of ``config.buckets`` buckets over ``config.window`` seconds."""
        config = self.config
        n = config.buckets
        self._n = n
        self._width = config.window / n
        self._inv_width = n / config.window
        self._calls = [0] * n
        self._fails = [0] * n
        self._slows = [0] * n
        self._head = int(now * self._inv_width)
        self._cur = self._head % n
        self.bucket_end = (self._head + 1) * self._width
        self.w_calls = 0
        self.w_failures = 0
        self.w_slow = 0

    def _derive(self) -> None:
        """The figures worked out once from the configuration."""
        config = self.config
        self._slow_at = config.slow_call_duration
        self._hysteresis = config.level_hysteresis
        floor = config.degradation_rate_threshold or config.failure_rate_threshold
        self._harmless_failures = math.inf if floor is None else floor * config.minimum_calls

    def set_plain(self, plain: bool) -> None:
        """Whether a success may skip every check (the shell's call: fault injection off)."""
        cfg = self.config
        self._plain = plain and cfg.slow_call_duration is None and cfg.failure_result is None
        self._refresh_fast()

    def take_pending(self) -> list[Transition]:
        out, self.pending = self.pending, []
        return out

    # -- internals -----------------------------------------------------------------------------

    def _warm_up(self, now: float) -> None:
        """Recovered: start the slow start (when configured)."""
        if self.config.slow_start > 0.0:
            self._warm_from = now
            self._warm_until = now + self.config.slow_start
            self._warm_credit = 0.0

    def _refresh_fast(self) -> None:
        """Open or close the shell's lock-free path: closed, and no success can move the state.

        The path also needs a plain configuration (no slow-call timing, no result predicate)
        and nothing injected (:meth:`set_plain`).

        A success lowers every signal except when it brings the window up to
        ``minimum_calls``, which wakes the rate signals; while enough failures are in the
        window for that to matter, successes must be judged one at a time.
        """
        if (
            self.state is CLOSED
            and self._plain
            and not self._warm_until
            and (
                self.w_failures < self._harmless_failures
                or self.w_calls >= self.config.minimum_calls
            )
        ):
            self.fast_gen = self.generation
        else:
            self.fast_gen = -1

    def _evaluate(self, now: float) -> None:
        s, why = self.severity()
        if s >= 1.0:
            self._open(now, why)
            return
        target = level_for(s) if s >= 0.0 else None
        if self.state is DEGRADED:
            current = self.level
            assert current is not None
            if level_rank(target) < level_rank(current):
                # Hysteresis: a level is left downwards only some way below its floor, and a
                # fall of several levels stops at the highest one it is not that far below.
                target = _landing(current, s, self._hysteresis)
                if target is current:
                    return
            if target is None:
                self._move(CLOSED, None, "recovered", now, bump=False)
            elif target is not current:
                self._move(DEGRADED, target, why, now, bump=False)
        elif target is not None:
            self._move(DEGRADED, target, why, now, bump=False)

    def _open(self, now: float, reason: str) -> None:
        cfg = self.config
        grown = cfg.reset_timeout * cfg.reset_timeout_multiplier**self.recovery_attempts
        cap = cfg.open_time_cap
        timeout = min(grown, cap)
        if cfg.reset_timeout_jitter:
            spread = 2.0 * self._rng.random() - 1.0
            if grown >= cap:  # at the cap only shorter, so breakers there spread out too
                spread = -abs(spread)
            timeout = min(timeout * (1.0 + cfg.reset_timeout_jitter * spread), cap)
        self.open_until = now + timeout
        self._hc_last = now
        self.times_opened += 1
        self._move(OPEN, None, reason, now)

    def _half_open(self, now: float, reason: str) -> None:
        if self.fleet_opened and self.probe_cap != math.inf:
            self.probe_cap = 0  # each attempt asks the fleet for permits anew
        self.recovery_attempts += 1
        self._probes.clear()
        self._probe_ok = 0
        self._probe_failed = 0
        self._move(HALF_OPEN, None, reason, now)

    def _judge_probes(self, now: float) -> None:
        cfg = self.config
        need = cfg.probes_needed
        if self._probe_ok >= need:
            self._probes.clear()
            self._clear_window(now)
            self._warm_up(now)
            if self.fleet_opened:
                self.fleet_opened = False
                self.fleet_recovered = True
                self.probe_cap = math.inf
            self._move(CLOSED, None, "probes_succeeded", now)  # reports the attempt that won
            self.recovery_attempts = 0
        elif self._probe_failed > cfg.half_open_max_calls - need:
            self._probes.clear()
            self._open(now, "probes_failed")

    def _move(
        self,
        to: BreakerState,
        level: DegradationLevel | None,
        reason: str,
        now: float,
        *,
        bump: bool = True,
    ) -> None:
        if bump:
            self.generation += 1
        calls = self.w_calls
        self.pending.append(
            Transition(
                from_state=self.state,
                to_state=to,
                from_level=self.level,
                level=level,
                reason=reason,
                generation=self.generation,
                at=now,
                failures=self.w_failures,
                calls=calls,
                failure_rate=self.w_failures / calls if calls else 0.0,
                recovery_attempts=self.recovery_attempts,
            )
        )
        self.state = to
        self.level = level
        self._refresh_fast()

    def _roll(self, b: int) -> None:
        steps = b - self._head
        if steps <= 0:
            return
        n = self._n
        if steps >= n:
            for i in range(n):
                self._calls[i] = self._fails[i] = self._slows[i] = 0
            self.w_calls = self.w_failures = self.w_slow = 0
        else:
            calls, fails, slows = self._calls, self._fails, self._slows
            for k in range(1, steps + 1):
                i = (self._head + k) % n
                self.w_calls -= calls[i]
                self.w_failures -= fails[i]
                self.w_slow -= slows[i]
                calls[i] = fails[i] = slows[i] = 0
        self._head = b
        self._cur = b % n
        self.bucket_end = (b + 1) * self._width
        if self.state is CLOSED:
            self._refresh_fast()

    def _clear_window(self, now: float) -> None:
        for i in range(self._n):
            self._calls[i] = self._fails[i] = self._slows[i] = 0
        self.w_calls = self.w_failures = self.w_slow = 0
        self.consecutive = 0
        self._head = int(now * self._inv_width)
        self._cur = self._head % self._n
        self.bucket_end = (self._head + 1) * self._width


def _band(value: float, low: float | None, high: float | None) -> float:
    """Position of ``value`` in the band ``[low, high)``: negative below it, 1.0 from ``high``.

    Without a ``low`` there is no band: -1.0 below ``high``.
    """
    if high is None:
        return -1.0
    if value >= high:
        return 1.0
    if low is None:
        return -1.0
    return (value - low) / (high - low)
