"""A backend's calls through the limiter's failure policy (see ``_failure.py``).

Written once, for asyncio, in ``_guarded_async.py``; ``tools/async_to_sync.py`` writes the
thread twin, ``_guarded.py``. :class:`~._failure.GuardedBackend` is made of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import BackendError
from ._format import UnreadableState

if TYPE_CHECKING:
    from ._algorithms import Algorithm
    from ._backend import Outcome
    from ._failure import BackendGuard as _Policy
else:
    _Policy = object  # the policy is mixed in beside these calls (GuardedBackend)


class AsyncGuardedCalls(_Policy):
    """``decide``, ``refund`` and ``reset``, each through the failure policy."""

    __slots__ = ()

    async def decide_async(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        if self._spared(commit):
            return self._unanswered_outcome(keys, algorithms, cost, now, commit)
        try:
            outcome = await self.backend.decide_async(keys, algorithms, cost, now, commit)
        except UnreadableState as exc:  # one key's state: this decision only, no outage
            return self._unreadable_outcome(exc, keys, algorithms, cost, now, commit)
        except BackendError as exc:
            return self._unanswered_outcome(keys, algorithms, cost, now, commit, exc)
        if commit:  # a peek only read: the backend may still be unable to write
            self._ok()
        return outcome

    async def refund_async(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        if self._spared():
            # Raises when failing closed; local: given to the local states; else dropped.
            self._unanswered_refund(keys, algorithms, cost, now)
            return
        try:
            await self.backend.refund_async(keys, algorithms, cost, now)
        except UnreadableState as exc:
            self._unreadable(exc)
            return
        except BackendError as exc:
            self._unanswered_refund(keys, algorithms, cost, now, exc)
            return
        self._ok()

    async def reset_async(self, keys: Sequence[str]) -> None:
        await self.backend.reset_async(keys)
