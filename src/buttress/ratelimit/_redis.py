"""``RedisBackend``: rate-limit state shared by every process of every host, in Redis.

Each decision, every scope included, is one call of ``lua/decide.lua``: the script reads
the clock with ``TIME``, reads every scope's state, checks them all, and writes the new states
only if every scope admits, atomically (Redis runs one script at a time). The scripts transcribe
the pure cores of ``_algorithms.py``; the conformance tests hold them to the same answers.
Parameters travel with every call, so an adaptive limit can change between two calls.

Keys: the limiter's storage key ``namespace:name:scope[:id]`` becomes
``<prefix>{namespace:name}:scope[:id]``. The braces are a Redis Cluster hash tag: every key of
one limiter lives in one slot, so one script can touch all of a decision's scopes. Namespace,
limiter and scope names cannot hold ``:`` or braces, so the caller's id is always the last part,
after the tag, and no id can collide with another scope's key or move a key to another slot.
Every key carries a TTL (when its state is worth no more than no state), so idle keys vanish.
Keys are sent as their UTF-8 bytes, an id holding a lone surrogate (``"\\ud800"``: valid JSON,
yet no UTF-8 text) included (``surrogatepass``): bytes no text key has, so no id is lost or
shared with another.

The sync path uses a ``redis.Redis``; the asyncio path a ``redis.asyncio.Redis`` (one per event
loop when built from a URL). A failure of Redis (connection, timeout, an error of the server)
raises :class:`~buttress.BackendError`, which the limiter handles by its failure policy. A value
under a key that is no state of its scope's algorithm is decided on as spent by the script
(``_format.py``) and reported as :class:`~._format.UnreadableState`, as is an error the script
itself raised (its own arithmetic, not the server): one decision's trouble, never an outage.

Concurrent decisions go out batched (``_batching.py``): what queued while a call was on the
wire goes in the next, one script call. An asyncio decision whose caller is cancelled before
its call went out is dropped; one cancelled after still runs to its answer (the call is made
by a task of its own) and, if it admitted, the charge is given back at once (``refund.lua``),
so a cancelled call costs nothing, as on SQLite. (Only a decision still unanswered when its
event loop shuts down, which cancels every task, keeps its charge: its outcome is never known.)

On Redis 7 the scripts run as Redis functions (``_functions.py``), else with ``EVALSHA``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .._errors import BackendError, ButtressError, ConfigError
from .._fork import call_in_forked_child
from .._redact import redact_text, redacted_logger
from .._validate import positive
from ._algorithms import Algorithm
from ._backend import Outcome, TimeBase
from ._batching import AsyncBatcher, ThreadBatcher, request_of
from ._format import UnreadableState
from ._functions import AsyncScriptCall, Library, ScriptCall
from ._wire import Decided, Pending, Wire, answers, redis_key

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisBackend", "redis_key"]

TimeSource: TypeAlias = Literal["server", "caller"]
SyncClient: TypeAlias = "redis.Redis | redis.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"

# With the caller's clock (tests), Redis's own clock still runs the TTLs; a margin keeps a key
# alive while the caller's time says it is live even if the two clocks run apart.
CALLER_TIME_SLACK_MS = 600_000

# The asyncio clients a forked child inherited, held so that nothing of theirs runs there (their
# closers would act on the parent's event loop and sockets).
_INHERITED: list[Any] = []

_log = redacted_logger("buttress.rate_limiter")

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


SCRIPTS = ("decide", "refund")


def _lua(name: str) -> str:
    return (resources.files("buttress.ratelimit") / "lua" / name).read_text()


def _script(name: str) -> str:
    """``common.lua`` then the named script: one text per operation, registered once."""
    return _lua("common.lua") + "\n" + _lua(name)


def _pattern(prefix: str, key_prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for every Redis key whose storage key starts with ``key_prefix``."""
    first = key_prefix.find(":")
    second = key_prefix.find(":", first + 1) if first >= 0 else -1
    esc = prefix.translate(_GLOB_SPECIAL)
    if second < 0:
        return f"{esc}{{{key_prefix.translate(_GLOB_SPECIAL)}*"
    tag, rest = key_prefix[:second], key_prefix[second:]
    return f"{esc}{{{tag.translate(_GLOB_SPECIAL)}}}{rest.translate(_GLOB_SPECIAL)}*"


class RedisBackend:
    """Keeps rate-limit state in Redis: one limit for every worker of every host.

    >>> backend = RedisBackend("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> limiter = RateLimiter(scopes, backend=backend, namespace="shop")  # doctest: +SKIP

    * ``url_or_client``: a ``redis://`` URL (the backend builds a ``redis.Redis`` and, per
      event loop, a ``redis.asyncio.Redis``, each with ``timeout`` on every socket operation
      and one immediate reconnect), or your own ``redis.Redis`` / ``redis.RedisCluster`` (the
      sync path) or ``redis.asyncio.Redis`` / ``redis.asyncio.RedisCluster`` (the asyncio
      path); give the other kind as ``client=`` or ``async_client=`` to have both (each kind
      once: a URL makes the sync client, so a URL with ``client=`` is refused). Your own
      clients need a ``socket_timeout`` (a backend call must never hang) and must not decode
      replies (``decode_responses``);
    * ``prefix``: put in front of every Redis key (no braces), e.g. ``"rl:"``;
    * ``timeout``: seconds each step of a call (connect, read, write) may take before the
      limiter's failure policy applies (a call makes at most two attempts);
    * ``time_source``: ``"server"`` (Redis ``TIME``: one clock for every host, the default)
      or ``"caller"`` (the ``now`` the limiter passes from its clock; for tests that inject
      time);
    * ``lazy``: make the backend without asking the server. By default the backend sends a
      ``PING`` when made (with its sync client; an asyncio client alone is first used by the
      first call), as ``SQLiteBackend`` proves its file: a server that cannot be reached
      (refused, unresolvable, timed out) is a :class:`~buttress.BackendError`, one that
      refuses the credentials or answers PING with an error a :class:`~buttress.ConfigError`.
      ``lazy=True`` (or ``?lazy=true`` in the URL) is for an application that may start
      before its Redis: the failure policy applies from the first decision.
    """

    __slots__ = (
        "__weakref__",
        "_aclients",
        "_async_client",
        "_caller_time",
        "_client",
        "_decide",
        "_errors",
        "_giving_back",
        "_library",
        "_own_sync",
        "_refund",
        "_slack",
        "_texts",
        "_threads",
        "_url",
        "_wire",
        "prefix",
        "time_source",
        "timeout",
    )

    def __init__(
        self,
        url_or_client: str | SyncClient | AsyncClient,
        *,
        client: SyncClient | None = None,
        async_client: AsyncClient | None = None,
        prefix: str = "",
        timeout: float = 0.25,
        time_source: TimeSource = "server",
        lazy: bool = False,
    ) -> None:
        try:
            import redis as redis_sync
            import redis.asyncio as redis_async
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ConfigError(
                "backend", "RedisBackend needs redis-py: pip install redis (the 'redis' extra)"
            ) from exc
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigError("prefix", f"must be a string without braces, got {prefix!r}")
        positive("timeout", timeout)
        if time_source not in ("server", "caller"):
            raise ConfigError("time_source", f"must be 'server' or 'caller', got {time_source!r}")
        # What a failure of Redis looks like (redis-py is imported only when a backend is made).
        self._errors: tuple[type[BaseException], ...] = (
            redis_sync.RedisError,
            OSError,
            TimeoutError,
        )
        # Decisions whose callers were cancelled, until they answer, and their refunds.
        self._giving_back: set[asyncio.Future[Any]] = set()
        self.prefix = prefix
        self.timeout = float(timeout)
        self.time_source: TimeSource = time_source
        self._url: str | None = None
        self._client: SyncClient | None = client
        self._async_client: AsyncClient | None = async_client
        sync_kinds = (redis_sync.Redis, redis_sync.RedisCluster)
        async_kinds = (redis_async.Redis, redis_async.RedisCluster)
        # The parameter each client came in by, for the errors: a client's own, or the URL's.
        names = {"client": "client", "async_client": "async_client"}
        if client is not None and not isinstance(client, sync_kinds):
            raise ConfigError(
                "client", f"must be a redis.Redis or redis.RedisCluster, got {_kind(client)}"
            )
        if async_client is not None and not isinstance(async_client, async_kinds):
            raise ConfigError(
                "async_client",
                "must be a redis.asyncio.Redis or redis.asyncio.RedisCluster, "
                f"got {_kind(async_client)}",
            )
        if isinstance(url_or_client, (str, *sync_kinds)) and client is not None:
            first = "a URL (which makes one)" if isinstance(url_or_client, str) else "a client"
            raise ConfigError(
                "client",
                f"a sync client given twice: url_or_client is {first}, and client= another; "
                "give one",
            )
        if isinstance(url_or_client, async_kinds) and async_client is not None:
            raise ConfigError(
                "async_client",
                "an asyncio client given twice: url_or_client is one, and async_client= "
                "another; give one",
            )
        if isinstance(url_or_client, str):
            from ._from_url import redis_url_problem, without_lazy

            problem = redis_url_problem(url_or_client)
            if problem is not None:
                raise ConfigError("url_or_client", problem)
            self._url, lazy_url = without_lazy(url_or_client)
            lazy = lazy or lazy_url
            try:
                self._client = redis_sync.Redis.from_url(self._url, **self._options(False))
            except ValueError as exc:
                raise ConfigError("url_or_client", f"not a Redis URL: {exc}") from exc
            _check_decoding("url_or_client", self._client)
        elif isinstance(url_or_client, async_kinds):
            self._async_client = url_or_client
            names["async_client"] = "url_or_client"
        elif isinstance(url_or_client, sync_kinds):
            self._client = url_or_client
            names["client"] = "url_or_client"
        else:
            raise ConfigError(
                "url_or_client",
                "must be a redis:// URL, or a client: redis.Redis, redis.RedisCluster, "
                f"redis.asyncio.Redis or redis.asyncio.RedisCluster; got {url_or_client!r}",
            )
        self._own_sync = self._url is not None
        for role, given in (("client", self._client), ("async_client", self._async_client)):
            if given is not None and not (role == "client" and self._own_sync):
                _check_timeout(names[role], given)
                _check_decoding(names[role], given)
        self._texts = (_script("decide.lua"), _script("refund.lua"))
        self._library = Library(_lua("common.lua"), {n: _lua(f"{n}.lua") for n in SCRIPTS})
        self._decide: Any = None
        self._refund: Any = None
        if self._client is not None:
            self._decide, self._refund = self._calls(self._client)
        # One asyncio client (and its scripts) per event loop: a client is bound to its loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient]
        self._aclients = weakref.WeakKeyDictionary()
        self._caller_time = time_source == "caller"
        self._slack = float(CALLER_TIME_SLACK_MS if self._caller_time else 0)
        self._wire = Wire(prefix, self._caller_time, self._slack)
        self._threads = self._thread_batcher()
        call_in_forked_child(self._after_fork)
        if not lazy and self._client is not None:
            self._check_server("url_or_client" if self._own_sync else names["client"])

    def _check_server(self, name: str) -> None:
        """PING the server with the sync client (see ``lazy``); ``name`` is the parameter the
        client came in by. Messages name the server by host and port, never by its URL."""
        import redis as redis_sync

        client = self._sync()
        try:
            client.ping()
            return
        except redis_sync.AuthenticationError as exc:
            error: ButtressError = ConfigError(
                name,
                f"Redis at {_server(client)} refused the credentials (check the user and "
                f"password): {exc}",
            )
        except redis_sync.ResponseError as exc:
            error = ConfigError(
                name, f"Redis at {_server(client)} answered PING with an error: {exc}"
            )
        except self._errors as exc:
            why = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
            error = BackendError(
                f"RedisBackend could not reach Redis at {_server(client)}: {why}"
                f"{_unreachable_hint(self._url, exc)}; pass lazy=True (or ?lazy=true in the "
                "URL) to make it anyway and apply the failure policy until Redis answers"
            )
        self.close()  # its own client, if it made one: nothing to keep
        raise error

    def _after_fork(self) -> None:
        """In a forked child: clients of its own; the parent's sockets stay the parent's.

        A client made from the URL is made again (its scripts with it); the asyncio clients of
        the parent's loops are left alone, unclosed (closing one would close it for the
        parent), and each loop of the child makes its own. A client passed in is kept: redis-py
        gives a sync client's connection pool new connections in a child by itself.
        """
        if self._aclients:
            _INHERITED.append(self._aclients)
            self._aclients = weakref.WeakKeyDictionary()
        self._threads = self._thread_batcher()  # a parent's thread may have held its lock
        if self._own_sync and self._url is not None:
            import redis as redis_sync

            self._client = redis_sync.Redis.from_url(self._url, **self._options(False))
            self._decide, self._refund = self._calls(self._client)

    def _options(self, asynchronous: bool) -> dict[str, Any]:
        """Client options: every socket operation bounded, one immediate reconnect, no backoff.

        (redis-py's default retries ten times with backoff: seconds of waiting in an outage.)
        """
        from redis.backoff import NoBackoff

        if asynchronous:
            from redis.asyncio.retry import Retry as AsyncRetry

            retry: Any = AsyncRetry(NoBackoff(), 1)
        else:
            from redis.retry import Retry

            retry = Retry(NoBackoff(), 1)
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": retry,
        }

    @property
    def time_base(self) -> TimeBase:
        return "server" if self.time_source == "server" else "wall"

    # -- what the scripts are given ------------------------------------------------------------

    def _keys(self, keys: Sequence[str]) -> list[bytes]:
        return self._wire.keys(keys)

    def _calls(self, client: Any, asynchronous: bool = False) -> tuple[Any, Any]:
        """The decide and refund scripts on ``client``: as Redis functions where it can (see
        ``_functions.py``), else as scripts (a cluster client: always scripts)."""
        scripts = [client.register_script(text) for text in self._texts]
        # Shared by the two: once functions are unavailable, neither tries again.
        state = {"functions": type(client).__name__ != "RedisCluster"}
        kind = AsyncScriptCall if asynchronous else ScriptCall
        return (
            kind(client, self._library, "decide", scripts[0], state),
            kind(client, self._library, "refund", scripts[1], state),
        )

    def _thread_batcher(self) -> ThreadBatcher:
        cluster = type(self._client).__name__ == "RedisCluster"
        return ThreadBatcher(self._decide_batch, cluster=cluster, caller_time=self._caller_time)

    def _decide_batch(self, batch: list[Pending]) -> list[Decided]:
        """One script call deciding ``batch`` (the sync client)."""
        keys, request = request_of(self._wire, batch)
        if any(p.commit for p in batch):
            reply: bytes = self._decide(keys=keys, args=(request,))
        else:  # only peeks: the call that a read-only replica runs too
            reply = self._decide(keys=keys, args=(request,), writes=False)
        return answers(reply, [(p.keys, p.commit) for p in batch])

    # -- clients -------------------------------------------------------------------------------

    def _sync(self) -> SyncClient:
        if self._client is None:
            raise ConfigError(
                "client", "this RedisBackend has only an asyncio client: pass client= as well"
            )
        return self._client

    async def _new_loop(self) -> _LoopClient:
        """The running event loop's first asyncio call: its client (and scripts).

        A client this backend makes (from the URL) is closed when the loop shuts down its
        async generators (``asyncio.run`` and ``asyncio.Runner`` do, before closing the loop):
        an async generator, started here, closes it in its ``finally``. Entries of loops closed
        without that are dropped here, so they never pile up (their sockets then go with the
        garbage collector); ``await backend.aclose()`` in the loop closes its client at once.
        """
        loop = asyncio.get_running_loop()
        for old in [other for other in self._aclients if other.is_closed()]:
            self._aclients.pop(old, None)
        client: Any = self._async_client
        if client is None:
            if self._url is None:
                raise ConfigError(
                    "async_client",
                    "this RedisBackend has only a sync client: pass async_client= as well",
                )
            import redis.asyncio as redis_async

            client = redis_async.Redis.from_url(self._url, **self._options(True))
        # A client of the caller's is bound to the loop its connections were made in: used from
        # another loop, redis-py raises RuntimeError ("Event loop is closed", "attached to a
        # different loop"). That is this backend failing, not a bug: the policy applies.
        mine = client is not self._async_client
        entry = _LoopClient(
            client,
            *self._calls(client, asynchronous=True),
            self._errors if mine else (*self._errors, RuntimeError),
        )
        decide = entry.decide

        async def call(keys: list[bytes], request: bytes, writes: bool) -> bytes:
            if writes:
                reply: bytes = await decide(keys=keys, args=(request,))
            else:  # only peeks: the call that a read-only replica runs too
                reply = await decide(keys=keys, args=(request,), writes=False)
            return reply

        entry.batcher = AsyncBatcher(
            self._wire,
            call,
            errors=entry.errors,
            failure=lambda exc, keys: _failure("decide", exc, keys),
            settle=lambda pending, decided: self._settle(entry, pending, decided),
            hold=self._hold,
            cluster=type(client).__name__ == "RedisCluster",
            caller_time=self._caller_time,
        )
        entry.closer = _closed_with_loop(self._aclients, loop, entry, mine)
        await entry.closer.__anext__()  # runs to its yield at once; the loop now tracks it
        self._aclients[loop] = entry
        return entry

    # -- decisions -----------------------------------------------------------------------------

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        self._sync()
        try:
            decided = self._threads.decide(Pending(keys, algorithms, cost, now, commit))
        except self._errors as exc:
            raise _failure("decide", exc, keys) from exc
        if decided.error is not None:
            raise decided.error
        assert decided.outcome is not None
        return decided.outcome

    async def decide_async(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        entry = self._aclients.get(asyncio.get_running_loop()) or await self._new_loop()
        return await entry.batcher.decide(Pending(keys, algorithms, cost, now, commit))

    def _hold(self, call: asyncio.Future[Any]) -> None:
        """A call whose caller left: referenced until done (``aclose`` and tests wait)."""
        if call not in self._giving_back:
            self._giving_back.add(call)
            call.add_done_callback(self._giving_back.discard)

    def _settle(self, entry: _LoopClient, pending: Pending, decided: Decided) -> None:
        """The answer to a decision whose caller was cancelled once it went out: an admitted
        one is given back."""
        if not pending.commit:
            return
        if decided.outcome is not None:
            allowed = decided.outcome[0]
        else:  # decided on a spent state: refused unless free
            assert decided.error is not None
            allowed = decided.error.outcome is not None and decided.error.outcome[0]
        if not allowed:
            return
        refund = asyncio.ensure_future(
            self._refund_quietly(entry, pending.keys, pending.algorithms, pending.cost, pending.now)
        )
        self._giving_back.add(refund)  # referenced until done
        refund.add_done_callback(self._giving_back.discard)

    async def _refund_quietly(
        self,
        entry: _LoopClient,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
    ) -> None:
        errors: tuple[type[BaseException], ...] = (*entry.errors, asyncio.CancelledError)
        try:
            args = (self._wire.refund(algorithms, cost, now),)
            await entry.refund(keys=self._keys(keys), args=args)
        except errors as exc:
            _log.warning(
                "Redis: the refund of a decision whose caller was cancelled failed (%s); "
                "that request stays charged",
                _failure("refund", exc),
            )

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        self._sync()
        args = (self._wire.refund(algorithms, cost, now),)
        try:
            unreadable = self._refund(keys=self._keys(keys), args=args)
        except self._errors as exc:
            raise _failure("refund", exc, keys) from exc
        if unreadable:
            raise UnreadableState(keys, range(len(keys)), None, repaired=True)

    async def refund_async(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        entry = self._aclients.get(asyncio.get_running_loop()) or await self._new_loop()
        args = (self._wire.refund(algorithms, cost, now),)
        try:
            unreadable = await entry.refund(keys=self._keys(keys), args=args)
        except entry.errors as exc:
            raise _failure("refund", exc, keys) from exc
        if unreadable:
            raise UnreadableState(keys, range(len(keys)), None, repaired=True)

    def reset(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            self._sync().delete(*self._keys(keys))
        except self._errors as exc:
            raise _failure("reset", exc) from exc

    async def reset_async(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        entry = self._aclients.get(asyncio.get_running_loop()) or await self._new_loop()
        try:
            await entry.client.delete(*self._keys(keys))
        except entry.errors as exc:
            raise _failure("reset", exc) from exc

    # -- keys ----------------------------------------------------------------------------------

    def clear(self, prefix: str = "") -> int:
        """Delete every key whose storage key starts with ``prefix`` (SCAN, then UNLINK)."""
        client = self._sync()
        removed = 0
        try:
            batch: list[bytes] = []
            match = _pattern(self.prefix, prefix).encode("utf-8", "surrogatepass")
            for key in client.scan_iter(match=match, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += client.unlink(*batch)
        except self._errors as exc:
            raise _failure("clear", exc) from exc
        return removed

    def key_count(self) -> int:
        """Keys under this backend's prefix; a SCAN of the whole database, O(keys)."""
        client = self._sync()
        pattern = (self.prefix.translate(_GLOB_SPECIAL) + "{*").encode("utf-8", "surrogatepass")
        try:
            return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        except self._errors as exc:
            raise _failure("key_count", exc) from exc

    def check_write(self, keys: Sequence[str] = ()) -> None:
        """Prove a decision could be written now, changing nothing; for health checks.

        ``SETRANGE key 0 ""`` on each key (or on one key no limiter uses) is a write that
        leaves a missing key missing and a string as it was, yet is refused where a decision's
        write would be: by a read-only replica, or by a server out of memory."""
        client = self._sync()
        try:
            for key in self._keys(keys or ("buttress:check:",)):
                client.setrange(key, 0, "")
        except self._errors as exc:
            raise _failure("check", exc) from exc

    def maintain(self, now: float) -> int:
        """Nothing to do: every key carries a TTL, and Redis drops expired keys itself."""
        return 0

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client if this backend made it (from a URL)."""
        if self._own_sync and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio client if this backend made it (from a URL).

        (``asyncio.run`` does it by itself when the loop shuts down; see :meth:`_new_loop`.)
        """
        entry = self._aclients.get(asyncio.get_running_loop())
        if entry is not None and entry.closer is not None:
            await entry.closer.aclose()

    def __repr__(self) -> str:
        where = redact_text(self._url or repr(self._client or self._async_client))
        return f"<RedisBackend {where} prefix={self.prefix!r} time_source={self.time_source}>"


class _LoopClient:
    """One event loop's asyncio client, its scripts, and what closes it with the loop."""

    __slots__ = ("batcher", "client", "closer", "decide", "errors", "refund")

    def __init__(
        self, client: Any, decide: Any, refund: Any, errors: tuple[type[BaseException], ...]
    ) -> None:
        self.client = client
        self.decide = decide
        self.refund = refund
        self.errors = errors  # what a failure of Redis looks like through this client
        self.closer: AsyncGenerator[None, None] | None = None
        self.batcher: AsyncBatcher  # set by RedisBackend._new_loop


async def _closed_with_loop(
    entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient],
    loop: asyncio.AbstractEventLoop,
    entry: _LoopClient,
    own: bool,
) -> AsyncGenerator[None, None]:
    """Waits at its ``yield`` until the loop shuts down its async generators (or
    ``RedisBackend.aclose``): then forgets the loop's entry and closes the client if the backend
    made it. A loop tracks every async generator started in it, so this runs in that loop."""
    try:
        yield
    finally:
        if entries.get(loop) is entry:
            del entries[loop]
        if own:
            await entry.client.aclose()


def _check_timeout(name: str, client: Any) -> None:
    """A client of the caller's must bound its socket operations."""
    for where in ("get_connection_kwargs", "nodes_manager", "connection_pool"):
        found = getattr(client, where, None)
        if found is None:
            continue
        kwargs = found() if callable(found) else getattr(found, "connection_kwargs", None)
        if isinstance(kwargs, dict):
            if kwargs.get("socket_timeout") is None:
                raise ConfigError(
                    name,
                    "needs a socket_timeout (e.g. redis.Redis(..., socket_timeout=0.25, "
                    "retry=Retry(NoBackoff(), 1))): a rate-limit call must never hang",
                )
            return


def _server(client: Any) -> str:
    """Where a client connects, without its credentials: ``host:port/db``, or a socket path."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kwargs, dict):
        if kwargs.get("path"):
            return f"{kwargs['path']} (db {kwargs.get('db', 0)})"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    default_node = getattr(client, "get_default_node", None)  # a cluster: its default node
    node = default_node() if callable(default_node) else None
    return str(getattr(node, "name", "the cluster"))


def _unreachable_hint(url: str | None, exc: BaseException) -> str:
    """What else a failure to connect may mean, where a common mistake looks just like it."""
    text = str(exc)
    if url is not None and url.startswith("rediss://") and "Timeout" in type(exc).__name__:
        return " (a rediss:// URL against a server without TLS times out like this)"
    if "closed by server" in text:
        return " (a server that is not Redis, or that expects TLS, closes the connection so)"
    return ""


def _kind(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _script_error(exc: BaseException) -> bool:
    """Whether Redis answered that the script itself failed (``user_script:<line>: ...``).
    The server's own refusals (out of memory, a read-only replica, ...) reach redis-py as
    subclasses of ``ResponseError`` and are outages, even when raised inside a script."""
    import redis as redis_sync

    text = str(exc)
    return type(exc) is redis_sync.ResponseError and (
        "user_script" in text or "user_function" in text
    )


def _check_decoding(name: str, client: Any) -> None:
    """The scripts answer in packed bytes: a client that decodes replies as text cannot read
    them (it would fail every call with a UnicodeDecodeError, after the call had counted)."""
    encoder = getattr(client, "get_encoder", None)
    if callable(encoder) and getattr(encoder(), "decode_responses", False):
        raise ConfigError(
            name,
            "decode_responses=True is set: the rate-limit scripts answer in packed bytes, "
            "which a client that decodes replies as text cannot read; give this backend a "
            "client (or URL) without it",
        )


def _failure(operation: str, exc: BaseException, keys: Sequence[str] = ()) -> BackendError:
    if keys and _script_error(exc):
        # The script's own error (its arithmetic on what it read), not the server's: one
        # decision's trouble, not an outage (none is known since states are checked).
        return UnreadableState(
            keys, range(len(keys)), None, repaired=False, detail=f"{type(exc).__name__}: {exc}"
        )
    hint = ""
    if isinstance(exc, RuntimeError):  # only ever caught from a caller's asyncio client
        hint = (
            " (an asyncio client is bound to the event loop it connected in: give each loop "
            "its own, or give RedisBackend a URL, which makes one per loop)"
        )
    return BackendError(f"Redis {operation} failed: {type(exc).__name__}: {exc}{hint}")
