"""The telemetry bus (:mod:`buttress.events`) as structlog events (the ``structlog`` extra).
See docs/integrations/logging.md.

:func:`attach` logs each event with ``logger.log(level, "<dotted event name>", **fields)``:
the level the event calls for (the same as the :mod:`logging` bridge's, in ``_records.py``)
and the event's measurements and metadata as ``buttress_<key>`` keys, so that none collides
with the keys structlog's processors add (``event``, ``level``, ``logger``, ``timestamp``).
The logger is ``structlog.get_logger("buttress.telemetry")`` unless one is given, bound with
``component`` (``circuit_breaker``, ``rate_limiter``, ...). Values are plain data (an
``error`` as ``"Type: message"``), with secrets masked as in every buttress record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from .. import events
from .._logging import log_fields
from .._redact import redact_data
from ._records import EventName, checked_levels, component, level_of, values

__all__ = ["HANDLER_ID", "attach", "detach"]

HANDLER_ID = "buttress.integrations.structlog"


def attach(
    *,
    handler_id: str = HANDLER_ID,
    names: Iterable[EventName] | EventName | Any = events.ALL,
    logger: Any = None,
    levels: Mapping[str, int | None] | None = None,
) -> None:
    """Log the events ``names`` (default: every event) through ``logger`` (a structlog
    logger; default ``structlog.get_logger("buttress.telemetry")``). ``levels`` as in
    :func:`buttress.integrations.logging.attach`."""
    overrides = checked_levels(levels)
    base = structlog.get_logger("buttress.telemetry") if logger is None else logger
    if not callable(getattr(base, "log", None)) or not callable(getattr(base, "bind", None)):
        raise TypeError(f"logger: a structlog logger (with .log and .bind), got {logger!r}")
    bound: dict[str, Any] = {}

    def handle(
        name: EventName, measurements: Mapping[str, float], metadata: Mapping[str, Any]
    ) -> None:
        level = level_of(name, metadata, overrides)
        if level is None:
            return
        part = component(name)
        log = bound.get(part)
        if log is None:
            log = bound[part] = base.bind(component=part)
        # No logging filter runs here: secrets are masked before structlog sees them.
        fields = log_fields(name, **values(measurements, metadata))
        log.log(level, ".".join(name), **{k: redact_data(v) for k, v in fields.items()})

    events.attach(handler_id, names, handle)


def detach(handler_id: str = HANDLER_ID) -> bool:
    """Stop logging events; returns whether the bridge was attached."""
    return events.detach(handler_id)
