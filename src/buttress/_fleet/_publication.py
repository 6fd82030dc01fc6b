"""A configuration published through the fleet, and what a process makes of it: pure.

Theory of operation
-------------------
An operator publishes a configuration document (``buttress config publish FILE``: the file's
TOML text, validated first) for every process of a fleet, or withdraws it (``buttress config
withdraw``). Redis keeps one *record* for the fleet's namespace: a generation that grows with
every publish and withdraw, the action, the document (while published), who, why and when.

Each process, once per sync interval, tells Redis what it runs and learns the record's
generation; when that differs from the generation it last *saw*, it gets the record in the
same answer and decides (:func:`seen`): a publication is to be applied (the process reloads
its infrastructure with the document, :func:`applied` or :func:`refused` after it); a
withdrawal, or a record gone from Redis, changes nothing the process runs. Generations are
compared for difference, not order, so a record made anew (Redis flushed) is followed too.

What wins: a published configuration wins over the process's own file (a change of the file
is not applied while a publication is in force: :func:`file_applies`) until it is withdrawn;
the process's environment (``BUTTRESS_...``) still applies over the document, as over a file.
A withdrawn publication stays in force in the processes that run it until their next reload
or restart (a restart starts from the file).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "NONE",
    "Following",
    "Publication",
    "applied",
    "file_applies",
    "refused",
    "seen",
]

PUBLISH, WITHDRAW = "publish", "withdraw"


@dataclass(frozen=True, slots=True)
class Publication:
    """The fleet's record as a process learns it. ``action`` is ``publish``, ``withdraw``,
    or ``""`` with generation 0 when nothing was ever published (or the record is gone);
    ``document`` is the TOML text while published."""

    generation: int
    action: str
    document: str
    by: str
    reason: str
    at_ms: int  # Redis's clock, milliseconds since the epoch

    def to_dict(self) -> dict[str, Any]:
        """The record without its document, for a report."""
        return {
            "generation": self.generation,
            "action": self.action,
            "by": self.by,
            "reason": self.reason,
            "at": self.at_ms / 1000,
        }


NONE = Publication(0, "", "", "", "", 0)


@dataclass(frozen=True, slots=True)
class Following:
    """What one process made of the fleet's records.

    ``record`` is the newest it saw; ``running`` the generation whose document it runs (0:
    its own configuration); ``state``: ``none`` (nothing published), ``pending`` (a
    publication seen, not applied yet), ``applied``, ``refused`` (its reload failed:
    ``refusal`` says why; it runs what it ran before) or ``withdrawn``."""

    record: Publication = NONE
    running: int = 0
    state: str = "none"
    refusal: str = ""

    @property
    def seen(self) -> int:
        return self.record.generation


def seen(following: Following, record: Publication) -> tuple[Following, bool]:
    """``record`` arrived (its generation differs from the one last seen): the following
    after it, and whether the process is to reload with ``record.document``. A withdrawal
    or a vanished record changes nothing the process runs."""
    if record.action == PUBLISH:
        return replace(following, record=record, state="pending", refusal=""), True
    state = "withdrawn" if record.action == WITHDRAW else "none"
    return replace(following, record=record, state=state, refusal=""), False


def applied(following: Following) -> Following:
    """The reload with the seen record's document succeeded: the process runs it."""
    return replace(following, running=following.seen, state="applied", refusal="")


def refused(following: Following, why: str) -> Following:
    """The reload failed (refused, or the document is invalid here): the process runs what
    it ran before, and says why."""
    return replace(following, state="refused", refusal=why)


def file_applies(following: Following) -> bool:
    """Whether a change of the process's own configuration file may be applied: not while a
    publication is in force in the fleet (whether or not this process could apply it)."""
    return following.record.action != PUBLISH
