"""``FleetFollower``: an infrastructure following the configuration published for its fleet.

The shell around ``_fleet/_publication.py`` (where what to do is decided): once per sync
interval, a job of the infrastructure's scheduler, run off the scheduler's thread and off the
fleet's sync thread (``blocking=True``; a reload builds components), makes one script call
(:meth:`RedisFleet.follow`): it reports what this process runs and learns whether the fleet's
record changed. On a new publication it reloads the infrastructure with the document; a
reload that is refused or invalid changes nothing, is logged as a WARNING naming why, emitted
as ``buttress.infrastructure.reload_refused`` and shown in the health report's ``published``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from .. import events
from .._errors import BackendError, ConfigError, InfrastructureClosedError
from .._fleet._fleet import RedisFleet
from .._fleet._publication import Following, applied, file_applies, refused, seen
from .._fork import fork_safe_lock
from .._redact import redacted_logger

__all__ = ["EV_REFUSED", "FleetFollower"]

EV_REFUSED = ("buttress", "infrastructure", "reload_refused")
_log = redacted_logger("buttress.infrastructure")

Reload = Callable[[Mapping[str, Any]], Any]  # applies a configuration, or raises


class FleetFollower:
    """What one infrastructure made of its fleet's published configuration.

    ``reload`` applies a configuration (``Infrastructure._reload`` with the source ``fleet``)
    or raises; :meth:`sync` is one round (the scheduler's job; tests call it directly)."""

    def __init__(self, namespace: str, fleet: RedisFleet, reload: Reload) -> None:
        self.namespace = namespace
        self.fleet = fleet
        self._reload = reload
        self._round = fork_safe_lock()  # one round at a time (the job, or a test's call)
        self.following = Following()
        self.error: str | None = None  # why the last look did not reach Redis

    def sync(self) -> None:
        """One round: report, learn, and apply a new publication (see the module docstring)."""
        with self._round:
            try:
                record = self.fleet.follow(self.following)
            except BackendError as exc:
                if self.error is None:
                    _log.warning("buttress %s: %s (retried every sync)", self.namespace, exc)
                self.error = str(exc)
                return
            self.error = None
            if record is None:
                return
            following, to_apply = seen(self.following, record)
            self.following = following
            what = f"generation {record.generation} by {record.by or '?'}"
            if record.reason:
                what += f" ({record.reason})"
            if not to_apply:
                if record.action:  # withdrawn; a record gone from Redis goes unsaid
                    _log.info(
                        "buttress %s: the fleet's configuration was withdrawn (%s); this "
                        "process keeps what it runs until its next reload or restart",
                        self.namespace,
                        what,
                    )
                return
            try:
                self._reload(_parsed(record.document, record.generation))
            except InfrastructureClosedError:
                return  # closed meanwhile: nothing to apply it to
            except Exception as exc:  # refused, or invalid here (its environment, imports)
                setting = exc.path if isinstance(exc, ConfigError) else "config"
                why = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                self.following = refused(following, why)
                _log.warning(
                    "buttress %s: the configuration published through the fleet (%s) was not "
                    "applied; this process runs what it ran before: %s",
                    self.namespace,
                    what,
                    why,
                )
                if events.enabled(EV_REFUSED):
                    events.emit(
                        EV_REFUSED,
                        {},
                        {
                            "namespace": self.namespace,
                            "source": "fleet",
                            "setting": setting,
                            "reason": why,
                        },
                    )
                return
            self.following = applied(following)

    def file_applies(self) -> bool:
        """Whether a change of the infrastructure's own file may be applied now (not while a
        configuration is published for the fleet: the published one wins)."""
        return file_applies(self.following)

    def status(self) -> dict[str, Any]:
        """What the health report shows (``published``): the fleet's record (no document),
        what this process runs and its state; ``refused`` says why it could not apply it;
        ``connected`` whether the last look reached Redis."""
        f = self.following
        return {
            **(f.record.to_dict() if f.record.generation else {}),
            "running": f.running,
            "state": f.state,
            "refused": f.refusal or None,
            "connected": self.error is None,
            "fleet_error": self.error,  # a driver's message: in the verbose report only
        }


def _parsed(document: str, generation: int) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(document)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"fleet configuration generation {generation}", f"is not valid TOML: {exc}"
        ) from None
    return data
