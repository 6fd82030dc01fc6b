"""What protecting an outbound request costs: our httpx transports and requests adapter over
bare ones, against the same local server.

    make bench BENCH=http_client     (or: .venv/bin/python benchmarks/http_client.py [--quick])

The server runs in a process of its own (a threaded ``http.server`` keeping connections
alive), so the process CPU time measured is the client's alone. Each request answers 200:
the overhead is that of a request that goes well (breaker admission and record, the status
rule, the deadline read; with an infrastructure, its pipeline and a retry that is not
needed). Overhead = candidate - bare client, in µs per request, and the ratio of the two.

Over loopback a request costs the client hundreds of µs, and the rounds' spread on a busy
machine is larger than our overhead; so the same httpx candidates run once more with an
in-memory inner transport (``httpx.MockTransport``, no socket), which leaves the transport's
own cost standing out.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import requests

import buttress as bt
from _timing import measure, time_sync
from buttress.integrations.httpx import AsyncProtectedTransport, ProtectedTransport
from buttress.integrations.requests import ProtectedAdapter

QUICK = "--quick" in sys.argv
N = 500 if QUICK else 2_000
ROUNDS = 3 if QUICK else 7

SERVER = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no delayed-ACK stall

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

CONFIG = {"circuit_breakers": {"api": {}}}


def start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}/"


def per_host() -> Callable[[str], bt.CircuitBreaker]:
    return lambda host: bt.CircuitBreaker(host)


def sync_candidates(url: str, infra: bt.Infrastructure) -> dict[str, Callable[[], object]]:
    clients = {
        "httpx bare": httpx.Client(),
        "httpx + breaker per host": httpx.Client(transport=ProtectedTransport(breaker=per_host())),
        "httpx + service (pipeline, retry)": httpx.Client(
            transport=ProtectedTransport(infra=infra, service="api", retry=bt.Retry())
        ),
    }
    out: dict[str, Callable[[], object]] = {n: (lambda c=c: c.get(url)) for n, c in clients.items()}
    bare = requests.Session()
    ours = requests.Session()
    ours.mount("http://", ProtectedAdapter(breaker=per_host()))
    out["requests bare"] = lambda: bare.get(url)
    out["requests + breaker per host"] = lambda: ours.get(url)
    return out


async def time_loop(fn: Callable[[], Awaitable[object]], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - t0) / n * 1e9


async def async_best(url: str, infra: bt.Infrastructure) -> dict[str, float]:
    # One event loop for all: an AsyncClient's connections belong to the loop that made them.
    clients = {
        "httpx async bare": httpx.AsyncClient(),
        "httpx async + breaker per host": httpx.AsyncClient(
            transport=AsyncProtectedTransport(breaker=per_host())
        ),
        "httpx async + service (pipeline, retry)": httpx.AsyncClient(
            transport=AsyncProtectedTransport(infra=infra, service="api", retry=bt.Retry())
        ),
    }
    best = dict.fromkeys(clients, float("inf"))
    for client in clients.values():  # warm up
        await time_loop(lambda c=client: c.get(url), N // 10)
    for _ in range(ROUNDS):
        for name, client in clients.items():
            best[name] = min(best[name], await time_loop(lambda c=client: c.get(url), N))
    for client in clients.values():
        await client.aclose()
    return best


def in_memory(infra: bt.Infrastructure) -> dict[str, Callable[[], object]]:
    def make() -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(200, content=b"ok"))

    clients = {
        "httpx bare (in memory)": httpx.Client(transport=make()),
        "httpx + breaker per host": httpx.Client(
            transport=ProtectedTransport(make(), breaker=per_host())
        ),
        "httpx + service (pipeline, retry)": httpx.Client(
            transport=ProtectedTransport(make(), infra=infra, service="api", retry=bt.Retry())
        ),
    }
    url = "http://api.internal/"
    return {n: (lambda c=c: c.get(url)) for n, c in clients.items()}


async def async_in_memory(infra: bt.Infrastructure) -> dict[str, float]:
    def make() -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(200, content=b"ok"))

    clients = {
        "httpx async bare (in memory)": httpx.AsyncClient(transport=make()),
        "httpx async + breaker per host": httpx.AsyncClient(
            transport=AsyncProtectedTransport(make(), breaker=per_host())
        ),
        "httpx async + service (pipeline, retry)": httpx.AsyncClient(
            transport=AsyncProtectedTransport(make(), infra=infra, service="api", retry=bt.Retry())
        ),
    }
    n = N * 5
    best = dict.fromkeys(clients, float("inf"))
    url = "http://api.internal/"
    for client in clients.values():
        await time_loop(lambda c=client: c.get(url), n // 10)
    for _ in range(ROUNDS):
        for name, client in clients.items():
            best[name] = min(best[name], await time_loop(lambda c=client: c.get(url), n))
    for client in clients.values():
        await client.aclose()
    return best


def table(title: str, best: dict[str, float], base: str, n: int = N) -> None:
    bare = best[base]
    print(f"\n{title}  (best of {ROUNDS} rounds x {n:,} requests, client process CPU time)")
    print(f"{'':42}{'µs/request':>12}{'overhead µs':>13}{'ratio':>8}")
    for name, ns in best.items():
        over = "" if name == base else f"{(ns - bare) / 1e3:13.1f}"
        ratio = f"{ns / bare:8.2f}"
        print(f"{name:42}{ns / 1e3:12.1f}{over:>13}{ratio}")


def main() -> None:
    process, url = start_server()
    try:
        with bt.Infrastructure("bench", CONFIG, env={}) as infra:
            sync = measure(sync_candidates(url, infra), time_sync, N, ROUNDS)
            table(
                "httpx, sync",
                {k: v for k, v in sync.items() if k.startswith("httpx")},
                "httpx bare",
            )
            table(
                "requests",
                {k: v for k, v in sync.items() if k.startswith("requests")},
                "requests bare",
            )
            table("httpx, asyncio", asyncio.run(async_best(url, infra)), "httpx async bare")
            memory = measure(in_memory(infra), time_sync, N * 5, ROUNDS)
            table("httpx, sync, no socket", memory, "httpx bare (in memory)", N * 5)
            amemory = asyncio.run(async_in_memory(infra))
            table("httpx, asyncio, no socket", amemory, "httpx async bare (in memory)", N * 5)
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
