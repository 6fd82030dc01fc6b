"""One limit across worker processes: uvicorn with 4 workers, each with its own
Infrastructure, all limited by one `infra.protect(...)` whose limiter keeps its state in Redis
or in one SQLite file. Requests over loopback HTTP; exactly `limit` are admitted, the rest get
the 429 every web integration answers (`buttress.integrations._http.refused`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from servers import free_port, wait_until

pytest.importorskip("uvicorn")

WORKERS = 4
LIMIT = 37
REQUESTS = 120

# Built at import in each worker (uvicorn starts its workers with `spawn`: nothing is copied).
APP = textwrap.dedent(
    """
    import os

    import buttress as bt
    from buttress.integrations._http import refused

    infra = bt.Infrastructure(
        os.environ["MW_NAMESPACE"],
        {
            "rate_limiting": {
                "limiters": {
                    "api": {
                        "limit": int(os.environ["MW_LIMIT"]),
                        "window": 86400.0,  # a day: no request can fall outside the window
                        "backend": os.environ["MW_BACKEND"],
                    }
                }
            },
        },
        env={},
    )
    PID = str(os.getpid()).encode()


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await infra.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/ready":  # not limited: tells the test a worker serves
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            async with infra.protect("api"):
                status, headers, body = 200, [(b"x-worker", PID)], b"admitted"
        except bt.RateLimitExceeded as exc:
            answer = refused(exc)
            status, body = answer.status, answer.body
            headers = [(k.encode(), v.encode()) for k, v in answer.headers]
            headers.append((b"x-worker", PID))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    """
)


class Uvicorn:
    """`uvicorn --workers 4` on a spare loopback port, serving the app above."""

    def __init__(self, app_dir: Path, backend: str) -> None:
        (app_dir / "mw_app.py").write_text(APP)
        self.port = free_port()
        self.namespace = f"mw{uuid.uuid4().hex[:12]}"
        env = {
            **os.environ,
            "MW_NAMESPACE": self.namespace,
            "MW_LIMIT": str(LIMIT),
            "MW_BACKEND": backend,
        }
        args = [sys.executable, "-m", "uvicorn", "mw_app:app", "--app-dir", str(app_dir)]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(WORKERS)]
        args += ["--log-level", "warning", "--no-access-log"]
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def listens(self) -> bool:
        if self.process.poll() is not None:
            out = self.process.stdout.read().decode() if self.process.stdout else ""
            raise AssertionError(f"uvicorn exited with {self.process.returncode}:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            return httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=5.0).status_code == 204
        except (OSError, httpx.HTTPError):
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _serve(tmp_path: Path, backend: str) -> Iterator[Uvicorn]:
    server = Uvicorn(tmp_path, backend)
    try:
        # real-time: four worker processes import buttress and build their Infrastructure
        wait_until(server.listens, what=f"uvicorn on port {server.port}", limit=60.0)
        yield server
    finally:
        server.stop()


def _fire(port: int) -> tuple[Counter[int], set[str], list[httpx.Response]]:
    """REQUESTS requests, 16 at a time, each on a connection of its own (so that the
    kernel hands them to every worker that is waiting in accept)."""

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=30.0) as client:
            return client.get(f"http://127.0.0.1:{port}/charge")

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(REQUESTS)))
    return (
        Counter(r.status_code for r in responses),
        {r.headers["x-worker"] for r in responses},
        responses,
    )


def _assert_exactly_the_limit(port: int) -> None:
    statuses, workers, responses = _fire(port)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}, statuses
    refusal = next(r for r in responses if r.status_code == 429)
    assert int(refusal.headers["retry-after"]) > 0
    assert refusal.json()["error"] == "RateLimitExceeded"
    # More than one process served: the limit held across them, not inside one.
    assert len(workers) > 1, workers


@pytest.mark.slow
@pytest.mark.redis
def test_four_uvicorn_workers_admit_exactly_the_limit_on_redis(
    tmp_path: Path, redis_url: str
) -> None:
    import redis

    for server in _serve(tmp_path, redis_url):
        try:
            _assert_exactly_the_limit(server.port)
        finally:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"*{server.namespace}*"))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.mark.slow
def test_four_uvicorn_workers_admit_exactly_the_limit_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    for server in _serve(tmp_path, f"sqlite:///{path}"):
        _assert_exactly_the_limit(server.port)
