"""The ids a limiter refuses most, counted only while an operator asks.

Ids are user data: they never appear in metrics or in the dashboard's frames. An operator asks
for one limiter for a while (``seconds``); until then a handler on ``rate_limiter.denied``
counts that limiter's refused keys in a bounded table (the space-saving algorithm: at most
``capacity`` ids, a newcomer takes the least counted one's place and its count, so the ids
refused most are kept and their counts are overestimated by at most the count they took over).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .. import events

EV_DENIED = ("buttress", "rate_limiter", "denied")
_ids = itertools.count(1)


class SpaceSaving:
    """The ``capacity`` most frequent items of a stream, in bounded memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def add(self, item: str) -> None:
        counts = self.counts
        if item in counts:
            counts[item] += 1
        elif len(counts) < self.capacity:
            counts[item] = 1
        else:
            least = min(counts, key=counts.__getitem__)
            counts[item] = counts.pop(least) + 1

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class RefusedIds:
    """Counts one limiter's refused ids until ``until`` (``now`` from the given clock)."""

    def __init__(
        self, limiter: str, until: float, now: Callable[[], float], *, capacity: int = 1000
    ) -> None:
        self.limiter = limiter
        self.until = until
        self._now = now
        self._counter = SpaceSaving(capacity)
        self._lock = threading.Lock()
        self._handler_id = f"buttress.dashboard.refused.{next(_ids)}"
        events.attach(self._handler_id, EV_DENIED, self._denied)

    def _denied(self, name: Any, measurements: Any, metadata: Mapping[str, Any]) -> None:
        if metadata.get("limiter") != self.limiter:
            return
        if self._now() >= self.until:
            self.stop()
            return
        key = metadata.get("key")
        if key is not None:
            with self._lock:
                self._counter.add(str(key))

    @property
    def active(self) -> bool:
        return self._now() < self.until

    def extend(self, until: float) -> None:
        self.until = max(self.until, until)
        if self._handler_id not in events.handlers():
            events.attach(self._handler_id, EV_DENIED, self._denied)

    def top(self, n: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": k, "refused": c} for k, c in self._counter.top(n)]

    def stop(self) -> None:
        events.detach(self._handler_id)
