"""How long a failure asks to wait: a refusal's ``retry_after``, an HTTP answer's ``Retry-After``.

Read by attribute, so no HTTP client is imported: an exception's ``response`` (httpx's
``HTTPStatusError``, requests' ``HTTPError``), the exception itself (aiohttp's
``ClientResponseError`` carries ``status`` and ``headers``), or a returned response (for a retry
``on_result``). Only a 429 (Too Many Requests) or 503 (Service Unavailable) answer's field is
honoured, as RFC 9110 defines it for those; a 3xx's ``Retry-After`` means something else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from .._breaker._outcome import result_status
from .._errors import RejectedError

_HONOURED = frozenset({429, 503})


def parse_retry_after(value: str | bytes | None, *, now: float) -> float | None:
    """The seconds an HTTP ``Retry-After`` field value asks to wait, or ``None`` if it is
    absent or malformed: delay-seconds (``"120"``) as they are, an HTTP-date (``"Wed, 21 Oct
    2026 07:28:00 GMT"``) as the seconds from ``now`` (wall-clock time, e.g. ``time.time()``)
    until then, 0.0 for a date already past."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return None
    if not isinstance(value, str):
        raise TypeError(f"Retry-After must be str or bytes, got {type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)  # "1.5": not RFC 9110, but servers send it
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def asked_wait(outcome: Any, now: Callable[[], float]) -> float | None:
    """The wait ``outcome`` (an exception, or a returned response) asks for: a refusal's
    ``retry_after``; else the ``Retry-After`` of a 429 or 503 answer it is or carries.
    ``now`` reads wall-clock time (for an HTTP-date)."""
    if isinstance(outcome, RejectedError):
        return outcome.retry_after
    if isinstance(outcome, BaseException):
        response = getattr(outcome, "response", None)
        answer = response if response is not None else outcome
    else:
        answer = outcome
    status = result_status(answer)
    if status not in _HONOURED:
        return None
    headers = getattr(answer, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except Exception:  # not a mapping after all: no field to honour
        return None
    if value is None or not isinstance(value, (str, bytes)):
        return None
    return parse_retry_after(value, now=now())
