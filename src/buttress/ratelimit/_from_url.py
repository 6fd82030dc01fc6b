"""``backend_from_url``: a backend from the configuration's ``backend`` string."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from .._errors import ConfigError
from ._backend import Backend
from ._memory import MemoryBackend

__all__ = ["backend_from_url", "redis_url_problem", "url_problem", "without_lazy"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
IN_MEMORY = (
    "':memory:' would give each thread its own empty database, shared with nothing; "
    "use MemoryBackend (backend 'memory') for one process, or a file"
)


def url_problem(url: str) -> str | None:
    """What is wrong with a backend URL on its face (``None``: nothing), without making it.

    One rule for every place that takes a URL: :func:`backend_from_url` (so
    ``RateLimiter(backend="...")``) and the configuration's ``rate_limiting.backend`` and
    per-limiter ``backend``, which are checked when the file is loaded.
    """
    if url == "memory":
        return None
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]  # sqlite:///var/lib/app.db is /var/lib/app.db
        if not path:
            return f"a SQLite URL needs a file path, got {url!r}"
        if path == ":memory:":
            return IN_MEMORY
        return None
    if url.startswith(REDIS_SCHEMES):
        return redis_url_problem(url)
    return (
        "must be 'memory', 'sqlite:///path' or 'redis://host:port/db' (also 'rediss://' and "
        f"'unix:///path/to/socket'), got {url!r}"
    )


_LAZY = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def without_lazy(url: str) -> tuple[str, bool]:
    """``url`` without buttress's own ``lazy`` query parameter (redis-py would pass it to the
    connection, which refuses it), and whether it asked for a lazy backend (``?lazy=true``:
    made without checking the server; see ``RedisBackend``)."""
    head, mark, query = url.partition("?")
    if not mark:
        return url, False
    kept, lazy = [], False
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if unquote(name) == "lazy":
            lazy = _LAZY.get(unquote(value).lower(), False)
        else:
            kept.append(item)
    return (f"{head}?{'&'.join(kept)}" if kept else head), lazy


def redis_url_problem(url: str) -> str | None:
    """What redis-py would refuse only when connecting, or silently get wrong: a database
    number that is no number (``redis://host:6379/zero`` would use database 0; ``?db=zero``
    fails), or ``decode_responses`` (the scripts answer in packed bytes); and buttress's own
    ``lazy`` parameter, which must say true or false."""
    _, _, raw = url.partition("?")
    for item in raw.split("&") if raw else ():
        name, _, value = item.partition("=")
        if unquote(name) == "lazy" and unquote(value).lower() not in _LAZY:
            return f"lazy must be true or false, got {unquote(value)!r} in the URL"
    parts = urlsplit(without_lazy(url)[0])
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}  # redis-py's
    if "db" in query:  # it wins over the path
        db = query["db"]
    else:
        db = "" if url.startswith("unix://") else unquote(parts.path).replace("/", "")
    if db and not (db.isascii() and db.isdigit()):
        return f"the database number must be a whole number, got {db!r} in {url!r}"
    decode = query.get("decode_responses")
    if decode is not None and decode.upper() not in ("", "0", "F", "FALSE", "N", "NO"):
        return (
            "decode_responses is set: the rate-limit scripts answer in packed bytes, which "
            f"must not be decoded; drop it from {url!r}"
        )
    return None


def backend_from_url(url: str, *, max_keys: int = 1_000_000, lazy: bool = False) -> Backend:
    """``"memory"``, ``"sqlite:///path/to/file.db"`` (``sqlite://relative.db``) or
    ``"redis://host:6379/0"`` (also ``rediss://`` and ``unix:///path/to/socket?db=0``).

    A bad URL, or one whose backend cannot be made (a SQLite file that cannot be written, a
    Redis that refuses the URL's credentials), is a :class:`~buttress.ConfigError` on
    ``backend``. A Redis server that cannot be reached is a :class:`~buttress.BackendError`,
    unless ``lazy`` (or ``?lazy=true`` in the URL) makes the backend without asking it.

    >>> backend_from_url("memory")  # doctest: +ELLIPSIS
    <buttress.ratelimit._memory.MemoryBackend object at ...>
    """
    if not isinstance(url, str):
        raise ConfigError("backend", f"must be a URL string, got {url!r}")
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError("backend", problem)
    if url == "memory":
        return MemoryBackend(max_keys=max_keys)
    try:
        if url.startswith("sqlite://"):
            from ._sqlite import SQLiteBackend

            return SQLiteBackend(url[len("sqlite://") :])
        from ._redis import RedisBackend

        return RedisBackend(url, lazy=lazy)
    except ConfigError as exc:  # the URL's, not the constructor's parameter (path, ...)
        raise ConfigError("backend", exc.message) from exc
