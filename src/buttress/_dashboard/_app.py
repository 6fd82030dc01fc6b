"""The dashboard as an ASGI app: the page, its frames as server-sent events, the actions.

One feed per event loop builds a frame every ``interval`` (off the loop, in a worker thread:
a report of hundreds of components must not hold up the application's requests) and hands it
to every open page; a page that connects gets the newest frame with the history first. The
decisions live elsewhere: what a frame holds in ``_frame.py``, who may act and what an action
does in ``_actions.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from ..ratelimit._limiter import RateLimiter
from ..ratelimit._scope import Scope
from ._actions import ActionError, parse, perform, refusal
from ._frame import Frames, Thresholds, without_history
from ._refused import RefusedIds

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

_STATIC = {
    "static/dashboard.js": "text/javascript; charset=utf-8",
    "static/dashboard.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_REFUSED_SECONDS = 600.0
WRONG_TOKENS_PER_CLIENT = 10  # a minute
WRONG_TOKENS = 60


class DashboardApp:
    """The operator dashboard of one :class:`~buttress.Infrastructure`, as an ASGI app
    (see :func:`buttress.dashboard_app`)."""

    def __init__(
        self,
        infra: Any,
        *,
        token: str | None = None,
        interval: float = 1.0,
        history: int = 60,
        allowed_hosts: Sequence[str] | None = None,
        reload_from: str | os.PathLike[str] | None = None,
    ) -> None:
        if not hasattr(infra, "health") or not hasattr(infra, "breakers"):
            raise TypeError(f"dashboard_app: expected an Infrastructure, got {infra!r}")
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ValueError("dashboard_app: token must be a string of at least 16 characters")
        if not (isinstance(interval, int | float) and 0.1 <= interval <= 60):
            raise ValueError(
                f"dashboard_app: interval must be in [0.1, 60] seconds, got {interval!r}"
            )
        if not (isinstance(history, int) and 1 <= history <= 3600):
            raise ValueError(f"dashboard_app: history must be an int in [1, 3600], got {history!r}")
        self.infra = infra
        self._token = token
        self.interval = float(interval)
        self._frames = Frames(interval=self.interval, history_length=history)
        self._frames_lock = threading.Lock()
        self._allowed = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )
        self._reload_from = reload_from
        self._feed: _Feed | None = None
        self._refused: dict[str, RefusedIds] = {}
        # Guessing the token: a few wrong tries a minute from one address, and from all.
        self._guesses = RateLimiter(
            [Scope("client", WRONG_TOKENS_PER_CLIENT, 60.0), Scope("global", WRONG_TOKENS, 60.0)],
            name="dashboard_tokens",
        )
        self._page = _asset("index.html")
        self._assets = {
            path: (_asset(path.removeprefix("static/")), ct) for path, ct in _STATIC.items()
        }

    def __repr__(self) -> str:
        mode = "actions enabled" if self._token is not None else "read-only"
        return f"<DashboardApp {self.infra.namespace!r}, {mode}>"

    # -- frames ------------------------------------------------------------------------------

    def frame(self) -> dict[str, Any]:
        """The next frame, with history (what ``api/state`` answers)."""
        infra = self.infra
        report = infra.health()
        cpu = infra.cpu
        with self._frames_lock:
            return self._frames.build(
                report,
                now=time.monotonic(),
                wall=time.time(),
                actions={
                    "enabled": self._token is not None,
                    "fleet": any(b.fleet is not None for b in tuple(infra.breakers.values())),
                    "reload": self._reload_from is not None,
                },
                cpu=(
                    None
                    if cpu is None
                    else Thresholds(cpu.config.utilisation_warning, cpu.config.utilisation_critical)
                ),
                operator_actions=tuple(infra.operator_actions),
                windows={n: b.config.window for n, b in tuple(infra.breakers.items())},
            )

    def _feed_here(self) -> _Feed:
        loop = asyncio.get_running_loop()
        feed = self._feed
        if feed is None or feed.loop is not loop or feed.done:
            feed = self._feed = _Feed(self, loop)
        return feed

    def end_streams(self) -> None:
        """End every page's stream (from any thread): a server shutting down calls it first,
        since a stream never ends by itself. The pages reconnect to whatever serves next."""
        feed = self._feed
        if feed is not None:
            feed.end()

    async def aclose(self) -> None:
        """Stop the feed and every count of refused ids (the app answers no more streams)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.stop()
        for counter in self._refused.values():
            counter.stop()
        self._refused.clear()

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._allowed is not None and _host(headers.get("host", "")) not in self._allowed:
            await _answer(
                send, 400, {"error": "unknown Host: the dashboard answers on its own names only"}
            )
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        route = path[len(root) :] if root and path.startswith(root) else path
        method = scope["method"]
        if route == "":
            await _send(send, 307, [(b"location", f"{root}/".encode())], b"")
        elif route == "/":
            await self._get(method, send, self._page, "text/html; charset=utf-8")
        elif route.removeprefix("/") in self._assets:
            body, kind = self._assets[route.removeprefix("/")]
            await self._get(method, send, body, kind)
        elif route == "/api/state":
            if method != "GET":
                await _answer(send, 405, {"error": "GET only"})
                return
            # The feed's newest frame: reading the state moves no rate and no history.
            _, full, _ = await self._feed_here().after(0)
            await _send(send, 200, [(b"content-type", b"application/json")], full)
        elif route == "/api/stream":
            if method != "GET":
                await _answer(send, 405, {"error": "GET only"})
                return
            await self._stream(receive, send)
        elif route in ("/api/actions", "/api/refused"):
            await self._act(route, scope, headers, receive, send)
        else:
            await _answer(send, 404, {"error": f"no such page: {route}"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _get(self, method: str, send: Send, body: bytes, kind: str) -> None:
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, {"error": "GET only"})
            return
        await _send(
            send, 200, [(b"content-type", kind.encode())], b"" if method == "HEAD" else body
        )

    async def _stream(self, receive: Receive, send: Send) -> None:
        feed = self._feed_here()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"x-accel-buffering", b"no"),  # a proxy in front must not hold frames back
                    *_SECURITY_HEADERS,
                ],
            }
        )

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        gone = asyncio.ensure_future(until_disconnect())
        ended = asyncio.ensure_future(feed.ended.wait())
        feed.clients += 1
        try:
            seq = 0
            first = True
            while not gone.done() and not ended.done():
                waiting = asyncio.ensure_future(feed.after(seq))
                await asyncio.wait((waiting, gone, ended), return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                seq, full, delta = waiting.result()
                data = full if first else delta
                first = False
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"event: state\ndata: " + data + b"\n\n",
                        "more_body": True,
                    }
                )
        except OSError:  # the client went away mid-send
            pass
        finally:
            feed.clients -= 1
            gone.cancel()
            ended.cancel()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _act(
        self,
        route: str,
        scope: Mapping[str, Any],
        headers: Mapping[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "POST only"})
            return
        body = await _body(receive)
        client = scope.get("client")
        guesser = {"client": client[0] if client else "unknown"}
        try:
            if self._token is not None:
                ahead = self._guesses.peek(guesser)
                if not ahead:
                    raise ActionError(
                        429, f"too many wrong tokens: try again in {ahead.retry_after:.0f} s"
                    )
            refused = refusal(self._token, headers, scheme=scope.get("scheme", "http"))
            if refused is not None:
                if refused.status == 401:
                    self._guesses.try_acquire(guesser)
                raise refused
            if route == "/api/refused":
                await _answer(send, 200, self._top_refused(body))
                return
            infra = self.infra
            act = parse(body, infra.breakers, can_reload=self._reload_from is not None)
            by = f"dashboard ({client[0]})" if client else "dashboard"
            message = await asyncio.to_thread(
                perform, infra, act, by=by, reload_from=self._reload_from
            )
        except ActionError as exc:
            await _answer(send, exc.status, {"error": str(exc)})
            return
        feed = self._feed
        if feed is not None:
            feed.kick()
        await _answer(send, 200, {"ok": True, "message": message})

    def _top_refused(self, body: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ActionError(400, 'body: a JSON object, {"limiter": NAME, "seconds": 60}')
        name = doc.get("limiter")
        if not isinstance(name, str) or name not in self.infra.limiters:
            raise ActionError(404, f"limiter: no limiter named {name!r}")
        seconds = doc.get("seconds", 60)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_REFUSED_SECONDS
        ):
            raise ActionError(
                400, f"seconds: a number in (0, {MAX_REFUSED_SECONDS:g}], got {seconds!r}"
            )
        now = time.monotonic()
        counter = self._refused.get(name)
        if counter is None or not counter.active:
            if counter is not None:
                counter.stop()
            counter = self._refused[name] = RefusedIds(name, now + seconds, time.monotonic)
        else:
            counter.extend(now + seconds)
        return {
            "limiter": name,
            "until": time.time() + (counter.until - now),
            "ids": counter.top(),
        }


class _Feed:
    """The frames of one event loop: built every interval while the app runs, shared by all
    of the loop's pages (one report per interval however many pages are open)."""

    def __init__(self, app: DashboardApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.clients = 0
        self.latest: tuple[int, bytes, bytes] | None = None
        self._changed = asyncio.Condition()
        self._kicked = asyncio.Event()
        self.ended = asyncio.Event()
        self._task = loop.create_task(self._run(), name="buttress-dashboard-feed")

    @property
    def done(self) -> bool:
        return self._task.done()

    async def _run(self) -> None:
        interval = self.app.interval
        while True:
            started = time.monotonic()
            frame = await asyncio.to_thread(self.app.frame)
            full = _dumps(frame)
            delta = _dumps(without_history(frame))
            async with self._changed:
                self.latest = (frame["seq"], full, delta)
                self._changed.notify_all()
            # The next frame one interval after this one began, however long this one took,
            # or at once after an action, so that every page shows what it did.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._kicked.wait(), max(0.0, interval - (time.monotonic() - started))
                )
            self._kicked.clear()

    def end(self) -> None:
        """End the streams (from any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.ended.set)

    def kick(self) -> None:
        """Build the next frame now (from any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._kicked.set)

    async def after(self, seq: int) -> tuple[int, bytes, bytes]:
        """The first frame newer than ``seq``, waiting for it."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.latest is not None and self.latest[0] > seq)
            assert self.latest is not None
            return self.latest

    async def stop(self) -> None:
        self._task.cancel()
        if asyncio.get_running_loop() is self.loop:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _host(value: str) -> str:
    """The host of a Host header, without the port (``[::1]:8088`` → ``[::1]``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _dumps(doc: Any) -> bytes:
    """JSON the page's ``JSON.parse`` reads: a number that is not finite becomes ``null``."""
    try:
        return json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(doc), separators=(",", ":"), default=str).encode()


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= 65536:  # more is refused by parse(), whose limit is far lower
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, *_SECURITY_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, doc: Any) -> None:
    await _send(send, status, [(b"content-type", b"application/json")], _dumps(doc))
