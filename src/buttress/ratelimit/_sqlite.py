"""``SQLiteBackend``: rate-limit state in a SQLite file, shared by the processes of one host.

Each decision runs the very same pure cores as the memory backend
(:func:`~buttress.ratelimit._algorithms.admit_all`) inside one ``BEGIN IMMEDIATE`` transaction:
the write lock is taken before the states are read, so two processes can never both read the
same room and both spend it. Every scope of a decision is read, checked and written in that one
transaction, or nothing is written.

The file is in WAL mode (readers never wait for the writer; a peek is a plain read) with
``synchronous=NORMAL`` (a crash of the process loses nothing; a power cut may lose the last
decisions, which for rate limits only means a little extra room). Waiting for the lock is
bounded by ``busy_timeout``. One row per key: ``(key, expires, state)``, the state packed as
doubles. Times are wall-clock seconds (``time_base="wall"``), so state survives a restart. A
state that is not one of its algorithm's is decided on as spent and stored so (``_format.py``).

Keys are TEXT, except an id holding a lone surrogate (``"\\ud800"``: valid JSON, yet no UTF-8
text), which SQLite cannot store as text: such a key is stored as a BLOB of its bytes
(``surrogatepass``), which no text key equals, so no id is lost or shared with another. Only a
call with such a key pays for it (its first attempt fails to bind, before anything is written).

Expired rows (``expires <= now``: worth no more than no row) are purged a few at a time by one
decision in :data:`PURGE_EVERY` that writes, and all at once by :meth:`SQLiteBackend.maintain`.

Connections: one per thread (and per process: a connection never crosses a fork), closed when
its thread ends, so threads that come and go (a thread per request, the workers of each
``asyncio.run``) never pile up open files. The asyncio methods run the sync ones in a worker
thread (``asyncio.to_thread``), so the event loop never blocks on the file or its lock and there
is one implementation of each operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import os
import sqlite3
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import events
from .._errors import BackendError, ConfigError
from .._fork import fork_safe_lock
from .._logging import log_fields
from .._redact import redacted_logger
from .._validate import positive
from ._algorithms import Algorithm, State, admit_all
from ._backend import Outcome, TimeBase
from ._format import UnreadableState, decoded, spent
from ._from_url import IN_MEMORY  # SQLite's ":memory:" is a database per connection (thread)

try:  # serialises re-creating a deleted file across processes (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows, where an open file cannot be deleted anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["SQLiteBackend"]

PURGE_EVERY = 16  # one writing decision in this many also purges...
PURGE_BATCH = 64  # ...at most this many expired rows
MAINTAIN_BATCH = 1000

_T = TypeVar("_T")

# SQLite's primary result codes (an error's ``sqlite_errorcode & 0xFF``).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8


# Connections a forked child inherited from its parent: never closed in the child (closing one
# there could release the parent's locks or checkpoint its WAL), never used either.
_INHERITED: list[sqlite3.Connection] = []


_log = redacted_logger("buttress.rate_limiter")

EV_REPLACED = ("buttress", "rate_limiter", "backend_file_replaced")


class _Errand:
    """A writing decision run in a worker thread for an asyncio caller who may give up on it
    (cancelled): whichever of the two comes second sees what the other did, under the lock."""

    __slots__ = ("abandoned", "lock", "outcome")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.outcome: Outcome | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read, so asyncio does not report it as never retrieved


class _Connection:
    """One thread's connection, closed when the thread ends.

    It lives only in the thread's ``threading.local`` (the backend sees it through a weak set),
    so when the thread ends and its locals go, this goes too and closes the connection. A
    ``sqlite3.Connection`` alone would not do: it sits in a reference cycle with its statement
    cache and would stay open until the garbage collector ran.

    ``identity`` is the file it opened (device and inode), ``sides`` its ``-wal`` and
    ``-shm`` files. Closing a connection to a file no longer at the path (deleted, or
    replaced) is safe: SQLite neither checkpoints nor deletes the ``-wal`` file (by name: it
    may be the new file's) for a database that has moved.
    """

    __slots__ = ("__weakref__", "conn", "identity", "pid", "sides")

    def __init__(self, conn: sqlite3.Connection, identity: _Identity | None, sides: _Sides) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.identity = identity
        self.sides = sides
        self.pid = os.getpid()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.pid == os.getpid():
            conn.close()
        else:
            _INHERITED.append(conn)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # e.g. at interpreter exit, modules half gone
            self.close()


_Identity = tuple[int, int]
_Sides = tuple[_Identity | None, ...]  # a connection's -wal and -shm files, or none


def _identity(path: str) -> _Identity | None:
    """The file at ``path`` (device, inode), or ``None`` if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class _Files:
    """What every view of one backend shares (see :meth:`SQLiteBackend.timed`): each thread's
    connection, and the file last seen at the path."""

    __slots__ = ("connections", "identity", "local", "lock")

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = fork_safe_lock()
        self.connections: weakref.WeakSet[_Connection] = weakref.WeakSet()  # the live threads'
        self.identity: _Identity | None = None


def _stored(key: str) -> str | bytes:
    """A key as stored: itself, or, when it is no UTF-8 text (a lone surrogate), its bytes."""
    try:
        key.encode()
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")
    return key


def _bumped(prefix: bytes) -> bytes:
    """The first byte string after every one starting with ``prefix`` (not empty). UTF-8,
    surrogates included, never holds the byte 0xFF, so the last byte can always go up."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _pack(state: State) -> bytes:
    return struct.pack(f"<{len(state)}d", *state)


def _unpack(blob: bytes) -> State:
    return struct.unpack(f"<{len(blob) // 8}d", blob)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The SQL of one table."""

    table: str
    schema: tuple[str, ...]
    get1: str
    put: str
    delete: str
    purge: str
    count: str
    clear_all: str
    clear_range: str
    clear_glob: str
    no_write: str

    @classmethod
    def for_table(cls, name: str) -> _Statements:
        # Quoted, so a name that is also an SQL keyword (``order``) is still a name. A plain
        # identifier holds no ``"``; quoting names the same table as before (case-insensitive).
        t = f'"{name}"'
        return cls(
            table=t,
            schema=(
                f"CREATE TABLE IF NOT EXISTS {t} "
                "(key TEXT PRIMARY KEY, expires REAL NOT NULL, state BLOB NOT NULL) WITHOUT ROWID",
                f'CREATE INDEX IF NOT EXISTS "{name}_expires" ON {t} (expires)',
            ),
            get1=f"SELECT key, state FROM {t} WHERE key = ?",
            put=f"INSERT OR REPLACE INTO {t} (key, expires, state) VALUES (?, ?, ?)",
            delete=f"DELETE FROM {t} WHERE key = ?",
            purge=f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires <= ? LIMIT ?)",
            count=f"SELECT COUNT(*) FROM {t}",
            clear_all=f"DELETE FROM {t}",
            clear_range=f"DELETE FROM {t} WHERE key >= ? AND key < ?",
            clear_glob=f"DELETE FROM {t} WHERE substr(key, 1, ?) = ?",
            # A write that changes nothing, yet fails where writing does (a read-only file):
            # ``BEGIN IMMEDIATE`` alone succeeds there.
            no_write=f"DELETE FROM {t} WHERE 0",
        )

    def get_many(self, n: int) -> str:
        return f"SELECT key, state FROM {self.table} WHERE key IN ({', '.join('?' * n)})"


class SQLiteBackend:
    """Keeps rate-limit state in a SQLite file: survives restarts, shared by local processes.

    >>> limiter = RateLimiter(scopes, backend=SQLiteBackend("/var/lib/app/limits.db"))
    ... # doctest: +SKIP

    * ``path``: the database file (created if missing, with its table); use one file per host
      (SQLite's locking is not safe on network file systems). A file this process cannot
      write is refused here, as is ``":memory:"`` (a database per connection, so per thread:
      nothing would be shared);
    * ``timeout``: seconds a call may wait for another process's transaction (``busy_timeout``)
      before the limiter's failure policy applies;
    * ``table``: the table's name, if the file holds other things: a Python-style identifier
      (an SQL keyword such as ``order`` is fine: it is quoted), not starting with ``sqlite_``.
    """

    __slots__ = ("_clock", "_files", "_sql", "_until_purge", "path", "timeout")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 1.0,
        table: str = "buttress_ratelimit",
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigError("path", f"must be a file path, got {path!r}")
        if str(path) == ":memory:":
            raise ConfigError("path", IN_MEMORY)
        positive("timeout", timeout)
        if not isinstance(table, str) or not table.isidentifier():
            raise ConfigError("table", f"must be a plain identifier, got {table!r}")
        if table.lower().startswith("sqlite_"):
            raise ConfigError(
                "table", f"names starting with 'sqlite_' are SQLite's own, got {table!r}"
            )
        self.path = str(Path(path))
        self.timeout = float(timeout)
        self._files = _Files()
        self._clock: Callable[[], float] | None = None  # see timed()
        self._until_purge = PURGE_EVERY
        self._sql = _Statements.for_table(table)
        try:  # open the file and prove it takes writes now: a bad path fails here, clearly
            self.check_write()
        except BackendError as exc:
            code = getattr(exc.__cause__, "sqlite_errorcode", 0) & 0xFF  # the primary code
            if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
                pass  # another process holds the lock right now: a wait, not a bad path
            elif code == _SQLITE_READONLY:
                raise ConfigError(
                    "path",
                    f"{self.path!r} is read-only here ({exc.__cause__}): the file and its "
                    "directory must be writable (SQLite writes -wal and -shm files beside it)",
                ) from exc
            else:
                raise ConfigError("path", f"cannot use {self.path!r} as a database: {exc}") from exc
        self._verify()

    def _verify(self) -> None:
        """``PRAGMA quick_check``: a file with damaged pages is refused here, by name, rather
        than failing the first decision that reads them."""
        try:
            found = self._run(lambda conn: conn.execute("PRAGMA quick_check(5)").fetchall())
        except BackendError as exc:
            code = getattr(exc.__cause__, "sqlite_errorcode", 0) & 0xFF
            if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
                return  # locked by another process right now: a wait, not a bad file
            found = [(exc.__cause__,)]
        if found != [("ok",)]:
            self.close()
            raise ConfigError(
                "path",
                f"{self.path!r} is corrupt (PRAGMA quick_check: "
                f"{'; '.join(str(row[0]) for row in found)}); restore it, or delete it (with "
                "its -wal and -shm files) to start with empty limits",
            )

    @property
    def time_base(self) -> TimeBase:
        return "wall"

    def timed(self, clock: Callable[[], float]) -> SQLiteBackend:
        """This backend reading the time from ``clock`` once it holds the write lock.

        A decision (or refund) waits for the lock, sometimes long; the time read before the
        wait may belong to a window that ended meanwhile, and rows deleted meanwhile as
        expired would be counted afresh in it. So the limiter hands its clock here (the same
        connections, the same file) and each decision is made at the time read under the lock,
        at least the ``now`` it was given. Every other transaction is ordered before or after
        it, so cleanup never deletes a row a decision is about to use.
        """
        view = copy.copy(self)
        view._clock = clock
        return view

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        local = self._files.local  # (close() replaces it: read it once)
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            return self._open(local, ())
        # One stat a call (about 4 us on a decision of about 40): a file deleted or replaced
        # under the connection is left, and the file now at the path opened instead. Every
        # call, not every so often: until a process notices, its decisions count apart.
        holder: _Connection = local.holder
        if _identity(self.path) == holder.identity:
            return conn
        conn = self._open(local, holder.sides)  # (the old one open till then: see _creating)
        with self._files.lock:
            self._files.connections.discard(holder)
        holder.close()
        return conn

    def _open(self, local: threading.local, left: _Sides) -> sqlite3.Connection:
        with self._creating(left):
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                for statement in self._sql.schema:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            # The files are open now: these are the ones it opened.
            identity = _identity(self.path)
            sides = (_identity(self.path + "-wal"), _identity(self.path + "-shm"))
        holder = _Connection(conn, identity, sides)
        # ``conn`` for the fast path above; ``holder`` closes it when this thread's locals go.
        local.conn, local.pid, local.holder = conn, holder.pid, holder
        files = self._files
        with files.lock:
            files.connections.add(holder)
            seen, files.identity = files.identity, identity
        if seen is not None and seen != identity:
            self._replaced()
        return conn

    @contextlib.contextmanager
    def _creating(self, left: _Sides) -> Iterator[None]:
        """Opening the file. A new file at the path (one was deleted, or another renamed over
        it) must not use the ``-wal`` and ``-shm`` files the old one left: processes that have
        not noticed yet still hold them, and SQLite then fails to open the new file (``disk
        I/O error``) or mixes the two. So, one process at a time, those go first: both when
        the file is missing; when it was replaced, those that the connection to the old file
        (``left``: still open, so their inodes cannot have been reused) was using."""
        missing = not os.path.exists(self.path)
        if fcntl is None or not (missing or left):
            yield  # the file is there, as before: SQLite's business
            return
        try:
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        except OSError:
            yield  # no such directory: SQLite says so
            return
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # released when closed
            missing = not os.path.exists(self.path)  # nobody made it meanwhile
            for suffix, old in zip(("-wal", "-shm"), left or (None, None), strict=True):
                side = self.path + suffix
                if missing or (old is not None and _identity(side) == old):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(side)
            yield
        finally:
            os.close(directory)

    def _replaced(self) -> None:
        """Report, once per new file, that the file at the path changed under the limiter."""
        meta = {"backend": "SQLiteBackend", "path": self.path}
        if events.enabled(EV_REPLACED):
            events.emit(EV_REPLACED, {}, meta)
        _log.warning(
            "SQLite %r was deleted or replaced while in use; reopened the file now at that "
            "path (the state in the old file is lost: its limits start afresh)",
            self.path,
            extra=log_fields(EV_REPLACED, **meta),
        )

    def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run ``work`` on this thread's connection; SQLite's errors (and the file system's,
        reopening a file) become BackendError."""
        try:
            return work(self._connect(), *args)
        except (sqlite3.Error, OSError) as exc:  # OSError: reopening a file that went
            raise BackendError(f"SQLite {self.path}: {type(exc).__name__}: {exc}") from exc

    def _run_keys(self, work: Callable[..., _T], keys: Sequence[str]) -> _T:
        """``work(conn, keys)``; again with the keys as stored if one is no UTF-8 text.

        (Binding such a key fails before anything is written: a transaction rolls back.)
        """
        try:
            return self._run(work, keys)
        except UnicodeEncodeError:
            return self._run(work, [_stored(k) for k in keys])

    @contextlib.contextmanager
    def _writing(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: the lock is taken first, so what is read stays true."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _rows(self, conn: sqlite3.Connection, keys: Sequence[Any]) -> dict[Any, Any]:
        if len(keys) == 1:
            rows = conn.execute(self._sql.get1, (keys[0],)).fetchall()
        else:
            rows = conn.execute(self._sql.get_many(len(keys)), tuple(keys)).fetchall()
        return dict(rows)

    def _states(
        self,
        conn: sqlite3.Connection,
        keys: Sequence[Any],
        algorithms: Sequence[Algorithm],
        now: float,
    ) -> tuple[dict[Any, State], list[int]]:
        """Each key's state for its algorithm, and the positions of those that could not be
        read: each replaced by a spent state (``_format.py``), never by no state."""
        rows = self._rows(conn, keys)
        states: dict[Any, State] = {}
        unreadable: list[int] = []
        for i, (key, algorithm) in enumerate(zip(keys, algorithms, strict=True)):
            blob = rows.get(key)
            if blob is None:
                continue
            state = decoded(algorithm, blob)
            if state is None:
                state = spent(algorithm, now)
                if state is None:  # an algorithm of the caller's own: nothing to stand in
                    raise UnreadableState([str(k) for k in keys], [i], None, repaired=False)
                unreadable.append(i)
            states[key] = state
        return states, unreadable

    def _repair(
        self, conn: sqlite3.Connection, keys: Sequence[Any], states: dict[Any, State], at: list[int]
    ) -> None:
        """Store the spent states that stand in for unreadable ones (in the transaction)."""
        conn.executemany(
            self._sql.put, [(keys[i], states[keys[i]][0], _pack(states[keys[i]])) for i in at]
        )

    # -- decisions -----------------------------------------------------------------------------

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        unreadable: list[int] = []

        def work(conn: sqlite3.Connection, keys: Sequence[str]) -> Outcome:
            if not commit:  # a peek: one consistent read (WAL), no lock
                states, unreadable[:] = self._states(conn, keys, algorithms, now)
                olds, news = admit_all(algorithms, keys, states.get, now, cost)
                return news is not None, olds, now
            with self._writing(conn):
                at = self._now_locked(now)
                states, unreadable[:] = self._states(conn, keys, algorithms, at)
                olds, news = admit_all(algorithms, keys, states.get, at, cost)
                if unreadable:
                    self._repair(conn, keys, states, unreadable)
                if news is None:
                    return False, olds, at
                conn.executemany(
                    self._sql.put,
                    [(k, s[0], _pack(s)) for k, s in zip(keys, news, strict=True)],
                )
                self._maybe_purge(conn, at)
            return True, olds, at

        outcome = self._run_keys(work, keys)
        if unreadable:
            raise UnreadableState(keys, unreadable, outcome, repaired=commit)
        return outcome

    async def decide_async(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        if not commit:
            return await asyncio.to_thread(self.decide, keys, algorithms, cost, now, False)
        # A caller cancelled meanwhile does not wait for the thread, which goes on and may
        # charge: then the thread itself gives the charge back (never the event loop, which
        # may be ending), so a call cancelled while deciding costs nothing.
        errand = _Errand()
        work = functools.partial(self._decide_for, errand, keys, algorithms, cost, now)
        deciding = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(deciding)
        except asyncio.CancelledError:
            deciding.add_done_callback(_retrieve)  # its error, if any, is nobody's now
            with errand.lock:
                errand.abandoned = True
                decided = errand.outcome
            if decided is not None and decided[0]:  # it had just charged: give back apart
                refund = functools.partial(self._refund_quietly, keys, algorithms, cost, now)
                threading.Thread(target=refund, name="buttress-sqlite-refund").start()
            raise

    def _decide_for(
        self,
        errand: _Errand,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
    ) -> Outcome:
        outcome = self.decide(keys, algorithms, cost, now, True)
        with errand.lock:
            errand.outcome = outcome
            abandoned = errand.abandoned
        if abandoned and outcome[0]:
            self._refund_quietly(keys, algorithms, cost, now)
        return outcome

    def _refund_quietly(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        try:
            self.refund(keys, algorithms, cost, now)
        except BackendError as exc:
            _log.warning(
                "SQLite %r: the refund of a decision whose caller was cancelled failed (%s); "
                "that request stays charged",
                self.path,
                exc,
            )

    def _now_locked(self, now: float) -> float:
        """The time of a transaction that holds the write lock: read now from the limiter's
        clock (see :meth:`timed`), never before ``now``, the time the call was made."""
        clock = self._clock
        if clock is None:
            return now
        later = clock()
        return later if later > now else now

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        """Amortised cleanup inside a write transaction already holding the lock, at the time
        read under it: only rows expired for every decision still to come go."""
        self._until_purge -= 1  # racy across threads: at worst a purge comes a little early
        if self._until_purge > 0:
            return
        self._until_purge = PURGE_EVERY
        conn.execute(self._sql.purge, (now, PURGE_BATCH))

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        unreadable: list[int] = []

        def work(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
            with self._writing(conn):
                at = self._now_locked(now)
                states, unreadable[:] = self._states(conn, keys, algorithms, at)
                for key, algorithm in zip(keys, algorithms, strict=True):
                    new = algorithm.refund(states.get(key), at, cost)
                    if new is None:
                        conn.execute(self._sql.delete, (key,))
                    else:
                        conn.execute(self._sql.put, (key, new[0], _pack(new)))

        self._run_keys(work, keys)
        if unreadable:  # refunded from a spent state, so stored readable again
            raise UnreadableState(keys, unreadable, None, repaired=True)

    async def refund_async(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        await asyncio.to_thread(self.refund, keys, algorithms, cost, now)

    def reset(self, keys: Sequence[str]) -> None:
        def work(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
            with self._writing(conn):
                conn.executemany(self._sql.delete, [(k,) for k in keys])

        self._run_keys(work, keys)

    async def reset_async(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self.reset, keys)

    # -- keys ----------------------------------------------------------------------------------

    def get(self, key: str) -> State | None:
        """The stored state of one key (``None`` when absent), for tests and debugging; a
        value that is no list of doubles raises :class:`UnreadableState` naming the key."""
        raw = self._run_keys(lambda conn, keys: self._rows(conn, keys).get(keys[0]), [key])
        if raw is None:
            return None
        if not isinstance(raw, bytes) or len(raw) % 8:
            size = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
            raise UnreadableState([key], [0], None, repaired=False, detail=f"a {size} value")
        return _unpack(raw)

    def clear(self, prefix: str = "") -> int:
        """Forget every key starting with ``prefix`` (all of them by default)."""

        def work(conn: sqlite3.Connection) -> int:
            with self._writing(conn):
                if not prefix:
                    return conn.execute(self._sql.clear_all).rowcount
                # Keys stored as BLOBs (see _stored) starting with the prefix's bytes: a BLOB
                # range, which holds no text (SQLite orders every TEXT before every BLOB).
                raw = prefix.encode("utf-8", "surrogatepass")
                removed = conn.execute(self._sql.clear_range, (raw, _bumped(raw))).rowcount
                if isinstance(_stored(prefix), bytes):
                    return removed  # no text key starts with what is no text
                last = ord(prefix[-1])
                if last < 0x10FFFF:  # keys in [prefix, prefix with its last char bumped)
                    nxt = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1  # text, no surrogate
                    bound = prefix[:-1] + chr(nxt)
                    return removed + conn.execute(self._sql.clear_range, (prefix, bound)).rowcount
                return removed + conn.execute(self._sql.clear_glob, (len(prefix), prefix)).rowcount

        return self._run(work)

    def key_count(self) -> int:
        return self._run(lambda conn: int(conn.execute(self._sql.count).fetchone()[0]))

    def check_write(self, keys: Sequence[str] = ()) -> None:
        """Prove a decision could be written now (the write lock taken, a write that changes
        nothing, rolled back); :class:`~buttress.BackendError` if not. For health checks."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(self._sql.no_write)
            finally:
                conn.execute("ROLLBACK")

        self._run(work)

    def maintain(self, now: float) -> int:
        """Delete every expired row, in short transactions so deciders never wait long.

        ``now`` was read before the lock was taken: every decision that takes the lock after
        this transaction reads a time at least as late (:meth:`timed`), so no row it is about
        to use has expired for it yet when it goes here.
        """

        def work(conn: sqlite3.Connection) -> int:
            removed = 0
            while True:
                with self._writing(conn):
                    at = self._now_locked(now)
                    n = conn.execute(self._sql.purge, (at, MAINTAIN_BATCH)).rowcount
                removed += n
                if n < MAINTAIN_BATCH:
                    return removed

        return self._run(work)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this backend opened (call when no thread is using it)."""
        files = self._files
        with files.lock:
            holders, files.connections = list(files.connections), weakref.WeakSet()
            files.local = threading.local()
        for holder in holders:
            holder.close()

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path!r}>"
