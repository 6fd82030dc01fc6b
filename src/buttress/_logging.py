"""buttress's log records: the package logger and the structured fields a record carries.

Every logger is a child of ``buttress`` (``buttress.rate_limiter``, ``buttress.pool``,
``buttress.memory``, ...). The package logger has a :class:`logging.NullHandler`, as a library's
should: an application that configures no logging gets nothing on stderr (without it, Python's
last-resort handler would print buttress's warnings there); one that configures logging gets
every record through its own handlers, as with any library.

Structured fields go in a record's ``extra`` through :func:`log_fields`, which prefixes each
name with ``buttress_``: no name can clash with an attribute of :class:`logging.LogRecord`
(``logging`` refuses ``message`` or ``name`` in ``extra`` with a ``KeyError``, and would let
``level`` or ``event`` through to collide downstream) nor with the keys structlog and JSON
formatters put beside them (``event``, ``level``, ``logger``, ``timestamp``). Flat fields, not
one nested dict: a ``%(buttress_limiter)s`` format, a JSON formatter and structlog's
``ExtraAdder`` all take them as they are, and log stores index them as plain keys.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["FIELD_PREFIX", "log_fields"]

FIELD_PREFIX = "buttress_"

logging.getLogger("buttress").addHandler(logging.NullHandler())


def log_fields(event: tuple[str, ...], **values: Any) -> dict[str, Any]:
    """A record's ``extra``: ``buttress_event`` (the telemetry event's name, dotted, e.g.
    ``buttress.rate_limiter.backend_down``) and each of ``values`` as ``buttress_<name>``."""
    fields = {FIELD_PREFIX + name: value for name, value in values.items()}
    fields[FIELD_PREFIX + "event"] = ".".join(event)
    return fields
