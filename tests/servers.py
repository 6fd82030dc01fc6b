"""Servers of a test's own, on spare loopback ports: a redis-server (or a small Redis Cluster)
that a test may kill, pause and restart without touching the machine's shared one."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

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


# -- an HTTP server of our own ------------------------------------------------------------------


class ScriptedHTTPServer:
    """A threaded HTTP/1.1 server on a spare loopback port that answers from a script.

    ``script(path)`` is consulted for each request: ``answer(path, status, headers)`` queues
    answers for a path, taken in order; a path with none left answers 200 ``ok``. ``seen``
    lists ``(method, path)`` of every request, in order, and ``on_request`` (when set) is
    called with the path as each request arrives (a test reads its clock there).
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self._lock = threading.Lock()
        self._answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.seen: list[tuple[str, str]] = []
        self.on_request: Callable[[str], None] | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
            disable_nagle_algorithm = True  # the body follows the headers at once

            def do_GET(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                status, headers = server._next(self.command, self.path)
                body = b"ok" if status < 400 else f"status {status}".encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        # shutdown() waits for the serving loop to look up: every 10 ms, not the default 0.5 s
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def answer(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._answers.setdefault(path, []).append((status, dict(headers or {})))

    def _next(self, method: str, path: str) -> tuple[int, dict[str, str]]:
        if self.on_request is not None:
            self.on_request(path)
        with self._lock:
            self.seen.append((method, path))
            queued = self._answers.get(path)
            return queued.pop(0) if queued else (200, {})

    def start(self) -> ScriptedHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# -- asking a server of a test's own -------------------------------------------------------------


def http_request(
    port: int, path: str, method: str = "GET", body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port``: the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def answers(port: int, path: str) -> bool:
    """Whether a server listens on ``port`` and answers ``path`` with 200."""
    try:
        return http_request(port, path)[0] == 200
    except OSError:
        return False
