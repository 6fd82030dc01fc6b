"""One retried call's decisions, pure: after an attempt fails, how long to wait, or why to stop.

The shells (``Retry.call``, ``call_async`` and the attempt loops) run the attempts and wait;
every choice between them is made here, from the clock's reading they pass in, so the sync
and async shells cannot disagree and a model test drives it without any waiting:

1. attempts ran out: stop (``EXHAUSTED``);
2. the wait is the backoff's draw, or longer when the failure says when to come back (a
   refusal's ``retry_after``, an upstream's ``Retry-After``);
3. a wait that would reach the deadline stops the call (``DEADLINE``): the next attempt could
   not start in time. Without a deadline, a wait asked for by the failure that is longer than
   the backoff's ``max`` stops it too: nothing bounds the wait then but ``max``;
4. last, the budget (if any) is asked for the retry (``BUDGET`` when it refuses): asked only
   for a retry that would otherwise happen, so refused calls do not spend it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backoff import Backoff
    from ._budget import RetryBudget

EXHAUSTED = "exhausted"
DEADLINE = "deadline"
BUDGET = "budget"


@dataclass(slots=True)
class Attempts:
    """The state of one retried call: the attempt running (1-based) and the waits so far."""

    attempts: int
    backoff: Backoff
    deadline: float | None  # the clock's monotonic time past which no attempt starts
    budget: RetryBudget | None
    number: int = 1
    waits: list[float] = field(default_factory=list)

    def next_wait(self, now: float, asked: float | None, rng: random.Random) -> float | str:
        """After attempt ``number`` failed in a way worth retrying: the seconds to wait before
        the next one (and ``number`` moves on), or why the call stops (``EXHAUSTED``,
        ``DEADLINE``, ``BUDGET``). ``asked``: the seconds the failure said to wait, if any."""
        if self.number >= self.attempts:
            return EXHAUSTED
        wait = self.backoff.delay(self.number, rng)
        if asked is not None and asked > wait:
            wait = float(asked)  # a hook or a refusal may give an int
        if self.deadline is not None:
            if now + wait >= self.deadline:
                return DEADLINE
        elif asked is not None and asked > self.backoff.max:
            return DEADLINE
        if self.budget is not None and not self.budget.try_retry():
            return BUDGET
        self.waits.append(wait)
        self.number += 1
        return wait

    def note(self, reason: str | None, name: str, asked: float | None) -> str:
        """The PEP 678 note on the error a retried call ends with."""
        waits = ", ".join(f"{w:.3g} s" for w in self.waits) or "none"
        head = f"buttress.Retry({name}): "
        n = self.number
        tried = f"{n} attempt{'s' if n != 1 else ''} (waits: {waits})"
        if reason == EXHAUSTED:
            return head + f"gave up after {tried}: every attempt failed"
        if reason == BUDGET:
            return head + f"the retry budget refused a retry after {tried}"
        if reason == DEADLINE:
            why = (
                f"the wait it asked for ({asked:.3g} s)"
                if asked is not None
                else "the next backoff wait"
            )
            bound = "the deadline" if self.deadline is not None else "backoff.max"
            return head + f"stopped after {tried}: {why} would pass {bound}"
        return head + f"attempt {n} raised an error it does not retry (after {tried})"
