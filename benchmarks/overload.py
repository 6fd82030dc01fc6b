"""Overload: what a concurrency limit buys when three times the service's capacity arrives.

    make bench BENCH=overload       (or: .venv/bin/python benchmarks/overload.py [--quick])

A discrete-event simulation on a simulated clock (a seeded ``random.Random``; no real time,
no threads). The service runs ``C`` calls at once on ``C`` workers; a call takes a lognormal
service time (median 20 ms, sigma 0.5). Calls beyond ``C`` wait in a FIFO queue in front of
the workers: the shape of a threaded server, a worker pool or a database behind its pool, and
the common one for a service a Python process calls. The service never learns that a client
gave up, so a call whose client timed out still takes a worker when its turn comes; that
wasted work is what makes an unlimited client collapse. ``--service ps`` swaps in processor
sharing instead (a CPU-bound service: every call slows to ``C / inflight`` of its speed).

Poisson arrivals offer 3 x the service's throughput (``3 C / mean service time``). The client
gives each call ``TIMEOUT`` seconds. A bulkhead with no waiting room admits a call while fewer
than ``limit`` calls are in flight and rejects it at once otherwise. Scenarios: no limit, a
static limit of 4 C (too high), a static limit of C (right), and each adaptive algorithm,
which is not told C.

Figures, measured after a warm-up (the first WARMUP of the run):

* unloaded: the service time's p99 with nothing queued; the SLO is twice that;
* goodput: calls that succeeded within the SLO, per second;
* p99: of the admitted calls' latencies as the client saw them (a timed-out call counts as
  the timeout);
* rejected: the share of arrivals the bulkhead refused; timeouts: of admitted calls;
* limit: the adaptive limit's time-weighted mean, and its value at the end.

The bar: the best adaptive algorithm reaches at least 90 % of the right static limit's
goodput, with p99 at most twice the unloaded latency.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from buttress._bulkhead._adaptive import AdaptiveConcurrency, AlgorithmName
from buttress._bulkhead._core import BulkheadState

MEDIAN = 0.020  # service time, seconds
SIGMA = 0.5  # of its log: p99 = 3.2 x the median, a realistic tail
LOAD = 3.0  # offered load, in multiples of the service's throughput
TIMEOUT = 0.5  # the client's timeout, seconds (8 x the unloaded p99)
WARMUP = 0.2  # the share of the run left out of the figures
# AIMD reads no baseline: told a latency budget (not C), it cuts on windows slower than it.
SLOW_CALL = 0.05
BAR_GOODPUT = 0.9
BAR_P99 = 2.0


# -- the service --------------------------------------------------------------------------------


class QueuedService:
    """C workers and a FIFO queue in front of them."""

    def __init__(self, capacity: int, schedule: Callable[[float, Call], None]) -> None:
        self.capacity = capacity
        self.busy = 0
        self.queue: deque[Call] = deque()
        self.schedule = schedule  # (when, call): the call's work ends then

    def submit(self, now: float, call: Call) -> None:
        if self.busy < self.capacity:
            self.busy += 1
            self.schedule(now + call.work, call)
        else:
            self.queue.append(call)

    def finished(self, now: float, call: Call) -> bool:
        """``call``'s work is done; returns True (a queued service never reschedules)."""
        if self.queue:
            nxt = self.queue.popleft()
            self.schedule(now + nxt.work, nxt)
        else:
            self.busy -= 1
        return True


class SharedService:
    """Processor sharing: n calls in service each progress at min(1, C / n) of full speed.

    A virtual clock ``v`` advances at that rate; a call ends when ``v`` reaches the value it
    had when the call arrived plus its work. One completion event is pending at a time, for
    the call that will end first; it is stale when the set of calls changed since.
    """

    def __init__(self, capacity: int, schedule: Callable[[float, Call], None]) -> None:
        self.capacity = capacity
        self.v = 0.0
        self.at = 0.0  # when v was last advanced
        self.heap: list[tuple[float, int, Call]] = []
        self.version = 0
        self.schedule = schedule

    def _rate(self) -> float:
        return min(1.0, self.capacity / len(self.heap)) if self.heap else 1.0

    def _advance(self, now: float) -> None:
        self.v += (now - self.at) * self._rate()
        self.at = now

    def _next(self) -> None:
        self.version += 1
        if self.heap:
            finish, _, call = self.heap[0]
            call.version = self.version
            self.schedule(self.at + (finish - self.v) / self._rate(), call)

    def submit(self, now: float, call: Call) -> None:
        self._advance(now)
        heapq.heappush(self.heap, (self.v + call.work, call.id, call))
        self._next()

    def finished(self, now: float, call: Call) -> bool:
        if call.version != self.version:
            return False  # stale: another call joined or left since it was scheduled
        self._advance(now)
        heapq.heappop(self.heap)
        self._next()
        return True


# -- the client's limit -----------------------------------------------------------------------


class Gate:
    """The bulkhead as the simulation needs it: buttress's own admission core
    (``BulkheadState``, refusing at once: ``max_waiting = 0``), told how each call ended."""

    def __init__(self, limit: int | None = None, adaptive: AdaptiveConcurrency | None = None):
        self.adaptive = adaptive
        self.unlimited = limit is None and adaptive is None
        places: int | AdaptiveConcurrency = adaptive if adaptive is not None else (limit or 1)
        self.state = BulkheadState(places, max_waiting=0)
        self.inflight = 0  # without a limit, calls are only counted

    @property
    def limit(self) -> float:
        return math.inf if self.unlimited else self.state.limit

    def admit(self, now: float) -> int | None:
        """The calls in flight once this one is in (itself included), or None if refused."""
        if self.unlimited:
            self.inflight += 1
            return self.inflight
        if not self.state.enter():
            return None
        return self.state.in_use

    def done(self, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        if self.unlimited:
            self.inflight -= 1
            return
        self.state.leave(now, now - rtt, inflight, "dropped" if dropped else "success")


# -- the run ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Call:
    id: int
    start: float
    work: float
    inflight: int
    over: bool = False  # the client has its answer (or gave up)
    version: int = 0


@dataclass
class Result:
    name: str
    goodput: float
    p99: float
    rejected: float
    timeouts: float
    limit_mean: float | None = None
    limit_final: int | None = None
    limits: list[tuple[float, float]] = field(default_factory=list)


def unloaded_p99(seed: int) -> float:
    rng = random.Random(seed)
    mu = math.log(MEDIAN)
    times = sorted(rng.lognormvariate(mu, SIGMA) for _ in range(100_000))
    return times[int(0.99 * len(times))]


def simulate(
    name: str,
    gate: Gate,
    *,
    capacity: int,
    duration: float,
    seed: int,
    slo: float,
    service: str = "queue",
    load: float = LOAD,
    timeout: float = TIMEOUT,
) -> Result:
    """One scenario: Poisson arrivals at ``load`` x capacity for ``duration`` simulated s."""
    rng = random.Random(seed)
    mu = math.log(MEDIAN)
    mean_service = MEDIAN * math.exp(SIGMA**2 / 2)
    rate = load * capacity / mean_service
    events: list[tuple[float, int, int, Call | None]] = []  # (when, seq, kind, call)
    seq = 0
    ARRIVE, FINISH, TIME_OUT = 0, 1, 2

    def push(when: float, kind: int, call: Call | None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, call))

    svc: QueuedService | SharedService
    svc_cls = QueuedService if service == "queue" else SharedService
    svc = svc_cls(capacity, lambda when, call: push(when, FINISH, call))
    warm = duration * WARMUP
    arrivals = rejected = admitted = good = timeouts = 0
    latencies: list[float] = []
    limit_area = 0.0
    last_t, last_limit = warm, gate.limit
    limits: list[tuple[float, float]] = []
    push(rng.expovariate(rate), ARRIVE, None)
    ids = 0
    while events:
        now, _, kind, call = heapq.heappop(events)
        if now > duration:
            break
        measured = now >= warm
        if gate.adaptive is not None and measured:
            limit_area += last_limit * (now - last_t)
            last_t, last_limit = now, gate.limit
        if kind == ARRIVE:
            push(now + rng.expovariate(rate), ARRIVE, None)
            arrivals += measured
            inflight = gate.admit(now)
            if inflight is None:
                rejected += measured
                continue
            admitted += measured
            ids += 1
            call = Call(ids, now, rng.lognormvariate(mu, SIGMA), inflight)
            svc.submit(now, call)
            push(now + timeout, TIME_OUT, call)
        elif kind == FINISH:
            assert call is not None
            if not svc.finished(now, call) or call.over:
                continue
            call.over = True
            rtt = now - call.start
            gate.done(now, rtt, call.inflight, dropped=False)
            if call.start >= warm:
                latencies.append(rtt)
                good += rtt <= slo
        else:
            assert call is not None
            if call.over:
                continue
            call.over = True
            gate.done(now, timeout, call.inflight, dropped=True)
            if call.start >= warm:
                latencies.append(timeout)
                timeouts += 1
        if gate.adaptive is not None and (not limits or limits[-1][1] != gate.limit):
            limits.append((now, gate.limit))
    span = duration - warm
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))] if latencies else math.nan
    result = Result(
        name,
        goodput=good / span,
        p99=p99,
        rejected=rejected / max(1, arrivals),
        timeouts=timeouts / max(1, admitted),
        limits=limits,
    )
    if gate.adaptive is not None:
        limit_area += last_limit * (duration - last_t)
        result.limit_mean = limit_area / span
        result.limit_final = gate.adaptive.limit
    return result


def scenarios(capacity: int, seed: int) -> list[tuple[str, Callable[[], Gate]]]:
    def adaptive(algorithm: AlgorithmName) -> Callable[[], Gate]:
        rng = random.Random(seed)
        return lambda: Gate(adaptive=AdaptiveConcurrency("sim", algorithm=algorithm, rng=rng))

    def aimd_slow() -> Gate:
        limit = AdaptiveConcurrency("sim", algorithm="aimd", slow_call=SLOW_CALL)
        return Gate(adaptive=limit)

    return [
        ("no limit", lambda: Gate()),
        (f"static 4C = {4 * capacity}", lambda: Gate(4 * capacity)),
        (f"static C = {capacity}", lambda: Gate(capacity)),
        ("gradient2", adaptive("gradient2")),
        ("vegas", adaptive("vegas")),
        ("aimd", adaptive("aimd")),
        (f"aimd slow {SLOW_CALL * 1e3:.0f}ms", aimd_slow),
    ]


def run(capacity: int, duration: float, seed: int, service: str) -> tuple[list[Result], float]:
    unloaded = unloaded_p99(seed)
    slo = BAR_P99 * unloaded
    results = [
        simulate(
            name, make(), capacity=capacity, duration=duration, seed=seed, slo=slo, service=service
        )
        for name, make in scenarios(capacity, seed)
    ]
    return results, unloaded


def report(capacity: int, results: list[Result], unloaded: float, service: str) -> bool:
    right = next(r for r in results if r.name.startswith("static C"))
    print(
        f"\nC = {capacity} ({service}), offered {LOAD:g} x capacity, "
        f"unloaded p99 {unloaded * 1e3:.1f} ms, SLO {BAR_P99 * unloaded * 1e3:.1f} ms, "
        f"timeout {TIMEOUT * 1e3:.0f} ms"
    )
    print(
        f"{'scenario':<19} {'goodput/s':>10} {'vs C':>6} {'p99 ms':>8} {'p99/unl':>8} "
        f"{'rejected':>9} {'timeouts':>9} {'limit mean':>11} {'final':>6}"
    )
    best_ok = False
    for r in results:
        ratio = r.goodput / right.goodput if right.goodput else math.nan
        mean = f"{r.limit_mean:.1f}" if r.limit_mean is not None else "-"
        final = str(r.limit_final) if r.limit_final is not None else "-"
        print(
            f"{r.name:<19} {r.goodput:>10.0f} {ratio:>6.0%} {r.p99 * 1e3:>8.1f} "
            f"{r.p99 / unloaded:>8.2f} {r.rejected:>9.1%} {r.timeouts:>9.1%} {mean:>11} {final:>6}"
        )
        if r.limit_mean is not None and ratio >= BAR_GOODPUT and r.p99 <= BAR_P99 * unloaded:
            best_ok = True
    return best_ok


def run_length(capacity: int, *, quick: bool) -> float:
    """Simulated seconds: 30 (10 with --quick) at C = 40; a small service runs longer (its
    windows fill more slowly), a large one shorter (it sees as many calls in less time)."""
    base = 10.0 if quick else 30.0
    return base * min(2.0, max(0.3, math.sqrt(40 / capacity)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, C = 40 only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--service", choices=("queue", "ps"), default="queue")
    parser.add_argument("--capacity", type=int, action="append", help="C (repeatable)")
    args = parser.parse_args(argv)
    capacities = args.capacity or ([40] if args.quick else [40, 10, 200])
    ok = True
    for capacity in capacities:
        duration = run_length(capacity, quick=args.quick)
        results, unloaded = run(capacity, duration, args.seed, args.service)
        passed = report(capacity, results, unloaded, args.service)
        print(
            f"bar (best adaptive >= {BAR_GOODPUT:.0%} of static C's goodput, "
            f"p99 <= {BAR_P99:g} x unloaded): {'met' if passed else 'NOT met'}"
        )
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
