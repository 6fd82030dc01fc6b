"""The telemetry bus (:mod:`buttress.events`) as standard :mod:`logging` records. See
docs/integrations/logging.md.

:func:`attach` logs each event as one record: on ``buttress.telemetry.<component>``
(``buttress.telemetry.circuit_breaker``, ``.rate_limiter``, ``.pool``, ...), at the level the
event calls for (WARNING when a breaker opens, DEBUG for the routine of every call: the table
and its reasons are in ``_records.py``), with a ``key=value`` message and the event's
measurements and metadata as ``buttress_<key>`` fields in ``extra``, as buttress's own records
carry them. Records pass through buttress's secret redaction.

Nothing here configures logging: the records reach the application's handlers at its levels.
A record is made only when its logger is enabled for its level, but an event is built only
when something listens to it: attaching to every event (the default) makes each call build
its events' metadata; pass ``names=`` to listen to fewer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .. import events
from .._logging import log_fields
from .._redact import redacted_logger
from ._records import EventName, checked_levels, level_of, logger_name, message, values

__all__ = ["HANDLER_ID", "attach", "detach"]

HANDLER_ID = "buttress.integrations.logging"


def attach(
    *,
    handler_id: str = HANDLER_ID,
    names: Iterable[EventName] | EventName | Any = events.ALL,
    logger: str = "buttress.telemetry",
    levels: Mapping[str, int | None] | None = None,
) -> None:
    """Log the events ``names`` (default: every event) as records of ``logger``'s children.

    ``levels`` replaces the level of some events, by dotted name:
    ``{"buttress.rate_limiter.denied": logging.INFO}`` (``None``: not logged). Attaching one
    ``handler_id`` twice raises :class:`ValueError`, as :func:`buttress.events.attach` does.
    """
    if not isinstance(logger, str) or not logger:
        raise TypeError(f"logger: the name of a logger, e.g. 'buttress.telemetry'; got {logger!r}")
    overrides = checked_levels(levels)
    loggers: dict[str, logging.Logger] = {}

    def handle(
        name: EventName, measurements: Mapping[str, float], metadata: Mapping[str, Any]
    ) -> None:
        level = level_of(name, metadata, overrides)
        if level is None:
            return
        where = logger_name(logger, name)
        log = loggers.get(where)
        if log is None:
            log = loggers[where] = redacted_logger(where)
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "%s",
            message(name, measurements, metadata),
            extra=log_fields(name, **values(measurements, metadata)),
        )

    events.attach(handler_id, names, handle)


def detach(handler_id: str = HANDLER_ID) -> bool:
    """Stop logging events; returns whether the bridge was attached."""
    return events.detach(handler_id)
