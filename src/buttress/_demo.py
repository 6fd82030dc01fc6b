"""``buttress demo``: a breaker walks through every state against a flaky upstream, live.

The upstream's failure rate climbs from 0 to 80% over three seconds, stays bad for a while,
then recovers. The breaker (2 s window, degraded from a 10% failure rate, open at 50%) sheds a
growing share of calls as it degrades, opens, probes while half-open, and closes once probes
succeed. Every transition is printed as it happens.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from .breaker import BreakerState, CircuitBreaker, Transition
from .errors import CircuitOpenError, LoadShedError


class UpstreamError(Exception):
    """The simulated dependency failed."""


@dataclass
class FlakyUpstream:
    """A dependency whose failure rate follows a script over time."""

    rng: random.Random
    start: float = field(default_factory=time.monotonic)
    ramp: float = 3.0  # seconds to climb from healthy to 80% failures
    sick_until: float = 5.0  # seconds after start when it recovers

    def failure_rate(self, now: float) -> float:
        t = now - self.start
        if t >= self.sick_until:
            return 0.0
        return min(0.8, 0.8 * t / self.ramp)

    def call(self) -> str:
        if self.rng.random() < self.failure_rate(time.monotonic()):
            raise UpstreamError("upstream returned 503")
        return "ok"


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    shed: int = 0
    refused: int = 0

    def line(self) -> str:
        return (
            f"ok {self.ok:4d}  failed {self.failed:4d}  "
            f"shed {self.shed:4d}  refused {self.refused:4d}"
        )


def run_breaker_demo(out: TextIO = sys.stdout, *, seed: int = 7, timeout: float = 20.0) -> bool:
    """Run the demo; returns whether the breaker went closed → … → open → … → closed."""
    breaker = CircuitBreaker(
        "upstream",
        window=2.0,
        buckets=10,
        failure_threshold=None,
        degradation_threshold=None,
        degradation_rate_threshold=0.1,
        failure_rate_threshold=0.5,
        minimum_calls=20,
        reset_timeout=1.0,
        half_open_max_calls=5,
        half_open_success_ratio=0.8,
        seed=seed,
    )
    upstream = FlakyUpstream(random.Random(seed))
    tally = Tally()
    visited: list[str] = ["closed"]
    began = upstream.start

    def show(br: CircuitBreaker, t: Transition) -> None:
        to = t.to_state.value + (f" ({t.level.value})" if t.level else "")
        fr = t.from_state.value + (f" ({t.from_level.value})" if t.from_level else "")
        judged_by_window = t.to_state in (BreakerState.DEGRADED, BreakerState.OPEN)
        rate = f"failure rate {t.failure_rate:5.1%}" if judged_by_window and t.calls else ""
        print(
            f"{time.monotonic() - began:6.2f}s  {fr:>17} -> {to:<17} {t.reason:<17} {rate}",
            file=out,
            flush=True,
        )
        visited.append(t.to_state.value)

    breaker.subscribe(show)
    print("buttress demo: a circuit breaker against a flaky upstream", file=out)
    print(
        "  window 2 s; degraded from a 10% failure rate (shedding 10/30/60% of calls by level),"
        " open at 50%; open for 1 s, then 5 probes\n",
        file=out,
    )
    next_status = began
    while time.monotonic() - began < timeout:
        now = time.monotonic()
        if now >= next_status:
            print(
                f"{now - began:6.2f}s  upstream failing {upstream.failure_rate(now):4.0%}"
                f"   {tally.line()}",
                file=out,
                flush=True,
            )
            next_status += 0.5
        try:
            breaker.call(upstream.call)
            tally.ok += 1
        except UpstreamError:
            tally.failed += 1
        except LoadShedError:
            tally.shed += 1
        except CircuitOpenError:
            tally.refused += 1
        if (
            breaker.state is BreakerState.CLOSED
            and "open" in visited
            and now - began > upstream.sick_until
        ):
            break
        time.sleep(0.005)  # about 200 calls a second
    walked = _walked_every_state(visited)
    print(f"\n{time.monotonic() - began:6.2f}s  done: {tally.line()}", file=out)
    print(
        "states visited: " + " -> ".join(_dedupe(visited)) + ("" if walked else "  (incomplete!)"),
        file=out,
    )
    return walked


def _dedupe(states: list[str]) -> list[str]:
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


def _walked_every_state(states: list[str]) -> bool:
    want = ["closed", "degraded", "open", "half_open", "closed"]
    i = 0
    for s in states:
        if i < len(want) and s == want[i]:
            i += 1
    return i == len(want)
