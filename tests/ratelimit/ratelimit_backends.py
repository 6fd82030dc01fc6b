"""Helpers for the persistent backends' tests: backends by name, a private redis-server, and the
worker functions the multi-process tests run (importable, so ``spawn`` children can run them)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import buttress as bt


def unique_prefix(label: str) -> str:
    """A Redis key prefix no other test (or other run on a shared server) uses."""
    return f"bt-test:{label}:{uuid.uuid4().hex[:12]}:"


def make_backend(kind: str, target: str, prefix: str = "", **options: Any) -> Any:
    """``memory``, ``sqlite`` (``target`` is the file) or ``redis`` (``target`` is the URL)."""
    if kind == "memory":
        return bt.MemoryBackend()
    if kind == "sqlite":
        return bt.SQLiteBackend(target, **options)
    if kind == "redis":
        return bt.RedisBackend(target, prefix=prefix, **options)
    raise ValueError(kind)


def close_backend(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()


# -- multi-process workers ---------------------------------------------------------------------

HAMMER_SCOPES = (
    # Windows far longer than the test: nothing refills, so the allowance is exactly the limit.
    ("user", 80, "token_bucket"),  # 4 users x 80 = 320
    ("org", 200, "fixed_window"),  # the tightest: one org for everyone
    ("global", 260, "sliding_window"),
)
HAMMER_WINDOW = 1e6


def hammer_limiter(backend: Any) -> bt.RateLimiter:
    return bt.RateLimiter(
        [
            bt.Scope(name, limit, HAMMER_WINDOW, algorithm=algorithm)  # type: ignore[arg-type]
            for name, limit, algorithm in HAMMER_SCOPES
        ],
        backend=backend,
        namespace="hammer",
        failure_policy="fail_closed",  # an error must fail the test, never admit silently
    )


def hammer(
    kind: str, target: str, prefix: str, user: str, start: Any, seconds: float, results: Any
) -> None:
    """Decide as fast as possible for ``seconds`` (all workers start together); report counts."""
    backend = make_backend(kind, target, prefix, timeout=5.0)
    limiter = hammer_limiter(backend)
    context = {"user": user, "org": "o1"}
    admitted = attempts = 0
    try:
        start.wait()
        deadline = time.monotonic() + seconds  # real-time: the issue asks for seconds of load
        while time.monotonic() < deadline:
            admitted += limiter.try_acquire(context).allowed
            attempts += 1
        results.put((user, admitted, attempts, None))
    except BaseException as exc:  # report, so the test fails with the reason
        results.put((user, admitted, attempts, repr(exc)))
    finally:
        close_backend(backend)


def hammer_threads(
    limiter: bt.RateLimiter, contexts: list[dict[str, str]], attempts: int
) -> list[int]:
    """One thread per context, all starting together; returns how many each had admitted."""
    admitted = [0] * len(contexts)
    start = threading.Barrier(len(contexts))

    def run(i: int) -> None:
        start.wait()
        for _ in range(attempts):
            admitted[i] += limiter.try_acquire(contexts[i]).allowed

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(contexts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted


def restart_limiter(backend: Any) -> bt.RateLimiter:
    return bt.RateLimiter(
        [bt.Scope("user", 10, 1e6), bt.Scope("global", 100, 1e6, algorithm="sliding_window")],
        backend=backend,
        namespace="restart",
        failure_policy="fail_closed",
    )


def spend(kind: str, target: str, prefix: str, attempts: int, results: Any) -> None:
    """Try ``attempts`` decisions in a fresh process; report admitted and what is left."""
    backend = make_backend(kind, target, prefix)
    try:
        limiter = restart_limiter(backend)
        admitted = sum(limiter.try_acquire("u1").allowed for _ in range(attempts))
        results.put((admitted, limiter.peek("u1").remaining))
    finally:
        close_backend(backend)


# -- a redis-server of our own -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_port() -> int:
    """A spare port whose cluster bus port (port + 10000) is spare too."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no spare port pair for a cluster node")


class RedisServer:
    """A throwaway ``redis-server`` on a spare port, which a test may kill, pause and restart."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, cwd: str | None = None) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--logfile", "", *extra]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
        )
        wait_until(self.answers, what=f"redis-server on port {self.port} to answer")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing is ever answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


class RedisClusterOfOurOwn:
    """Three cluster-enabled redis-servers (primaries only) made into one Redis Cluster."""

    def __init__(self, directory: str, nodes: int = 3) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli is not on PATH")
        self.cli = cli
        self.directory = directory
        self.servers = [RedisServer(cluster_port()) for _ in range(nodes)]

    def start(self) -> RedisClusterOfOurOwn:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for s in self.servers:
            conf = f"nodes-{s.port}.conf"
            s.start("--cluster-enabled", "yes", "--cluster-config-file", conf, cwd=self.directory)
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self.ready, what="the cluster to agree on its slots")

    def ready(self) -> bool:
        for s in self.servers:
            out = subprocess.run(
                [self.cli, "-p", str(s.port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" not in out:
                return False
        return True

    def stop(self) -> None:
        for s in self.servers:
            s.kill()


def wait_until(condition: Callable[[], bool], *, what: str, limit: float = 10.0) -> None:
    """Poll ``condition`` for a real process, a bounded number of times."""
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        time.sleep(0.02)  # real-time: another process is starting
    raise AssertionError(f"gave up waiting for {what}")
