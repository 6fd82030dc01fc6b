"""Secrets out of everything buttress shows: reprs, errors, CLI output and log records.

A password reaches buttress inside what users write: a Redis URL
(``redis://:s3cret@host/0``, ``?password=s3cret``), a pool's DSN in either form
(``postgresql://u:s3cret@h/db``, ``host=h password=s3cret``), a pool factory's ``kwargs``
(``password = "s3cret"``), and the errors a driver raises with any of these inside. Whatever
buttress shows passes through one of:

* :func:`redact_text`: a URL's password (``scheme://user:***@host``), and the value of every
  secret-looking key in ``key=value``, ``key: value``, ``'key': 'value'`` and query forms;
* :func:`redact_data`: plain data (mappings, lists, strings): a secret-looking key's value
  becomes ``"***"`` whatever it is, and every string goes through :func:`redact_text`;
* :func:`redacted_logger`: a package logger whose records are masked before any handler
  sees them (message, arguments, ``extra`` fields and the formatted traceback).

A key is secret-looking when its name, in any case, contains one of :data:`SECRET_WORDS`
(``password``, ``secret``, ...) or ends in one of :data:`SECRET_ENDINGS` (``token``,
``api_key``, ``pwd``, ...) as a whole part (``auth_token``, not ``token_bucket``). The data
itself is never changed: ``Config.model_dump()`` and a pool's factory get the real values.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "SECRET_ENDINGS",
    "SECRET_WORDS",
    "is_secret_key",
    "redact_data",
    "redact_field",
    "redact_text",
    "redacted_logger",
]

MASK = "***"

SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "credential")
SECRET_ENDINGS = ("pwd", "pass", "token", "auth", "apikey", "api_key", "access_key", "private_key")

# A URL's user information: scheme://user:password@ (the password may hold '@' and ':').
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^/?#\s]*)@")
_WORD = "|".join(SECRET_WORDS)
_END = "|".join(end.replace("_", "[_-]?") for end in SECRET_ENDINGS)
# A secret-looking name: a word anywhere, or an ending as the whole name or its last part.
_KEY = re.compile(rf"[\w.\-]*(?:{_WORD})[\w.\-]*|(?:[\w.\-]*[_.\-])?(?:{_END})", re.I)
# key=value, key: value, 'key': 'value', ?key=value, &key=value; the value quoted, bracketed
# (a tuple of credentials) or bare up to a separator.
_PAIR = re.compile(
    rf"""(?P<key>(?<![\w.\-])(?P<q>['"]?)(?:{_KEY.pattern})(?P=q))
        (?P<sep>\s*[=:]\s*)
        (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\([^()]*\)|\[[^\[\]]*\]
                  |[^\s&;,'"()\[\]{{}}<>]+)""",
    re.X | re.I,
)


def is_secret_key(name: str) -> bool:
    """Whether ``name`` (a mapping key, keyword or field name) holds a secret by its look."""
    return _KEY.fullmatch(name.strip("'\"")) is not None


def _masked_pair(m: re.Match[str]) -> str:
    value = m["value"]
    quote = value[0] if value[0] in "'\"" else ""
    return f"{m['key']}{m['sep']}{quote}{MASK}{quote}"


def redact_text(text: str) -> str:
    """``text`` with every password it shows replaced by ``***`` (see the module's doc)."""
    if ":" not in text and "=" not in text:  # no URL, no pair: the common case, quickly
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["pw"] else m[0], text)
    return _PAIR.sub(_masked_pair, text)


def redact_data(data: Any) -> Any:
    """A copy of plain data with secrets masked: a secret-looking key's value becomes ``***``
    (``None`` stays ``None``: nothing set), strings are :func:`redact_text`-ed."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, Mapping):
        return {k: _redact_item(k, v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        items = [redact_data(v) for v in data]
        return items if isinstance(data, list) else tuple(items)
    return data


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and value is not None and is_secret_key(key):
        return MASK
    return redact_data(value)


def redact_field(name: str, value: Any) -> Any:
    """A configuration field's value as its repr shows it (``name`` may itself be secret)."""
    return _redact_item(name, value)


# -- logs --------------------------------------------------------------------------------------

# What every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it.

    The message is rendered (``msg % args``) and, if it changes, kept rendered; a string
    ``extra`` field is masked in place; a traceback (``exc_info``, ``stack_info``) that shows a
    secret is kept as masked text in ``exc_text``, which ``logging.Formatter`` prints, and
    the exception object is dropped so that no handler can render it again. A record that
    shows no secret is left exactly as it was.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when formatting
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_FIELDS:
                continue
            if is_secret_key(key) and value is not None:
                setattr(record, key, MASK)
            elif isinstance(value, str | Mapping | list | tuple):
                masked = redact_data(value)
                if masked != value:
                    setattr(record, key, masked)
        if record.exc_info and record.exc_info[1] is not None:
            shown = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            masked = redact_text(shown)
            if masked != shown:
                record.exc_info, record.exc_text = None, masked
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


_FILTER = _RedactingFilter()


def redacted_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, its records redacted (every buttress module logs this way)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
