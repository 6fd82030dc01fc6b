"""Shared fixtures: real services (skip, or fail under CI=true), event validation, clocks."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from buttress import ManualClock, events
from buttress._catalog import CATALOG
from servers import RedisServer

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("BUTTRESS_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("BUTTRESS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_service(name: str, env_var: str, url: str, default_port: int) -> None:
    """Skip the test when the server does not answer; under CI=true, fail instead."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc}); set {env_var} to point at one"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "BUTTRESS_REDIS_URL", REDIS_URL, 6379)
    return REDIS_URL


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own on a spare port, which it may kill, pause and restart
    (skipped without redis-server on PATH; a failure under CI=true)."""
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        if IN_CI:
            pytest.fail(f"CI=true and {exc} (these tests start a private one)")
        pytest.skip(f"{exc} (these tests start a private one)")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()  # in case the test paused it
        server.kill()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    require_service("PostgreSQL", "BUTTRESS_PG_DSN", PG_DSN, 5432)
    return PG_DSN


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class EventLog:
    """Every buttress event emitted during a test, checked against the catalog."""

    def __init__(self) -> None:
        self.records: list[tuple[tuple[str, ...], dict[str, float], dict[str, Any]]] = []
        self.violations: list[str] = []

    def __call__(self, name: tuple[str, ...], measurements: Any, metadata: Any) -> None:
        self.records.append((name, dict(measurements), dict(metadata)))
        if name[:1] != ("buttress",):
            return  # a test's own event
        spec = CATALOG.get(name)
        if spec is None:
            self.violations.append(f"{name} is emitted but not in the catalog")
            return
        if set(measurements) != set(spec.measurements):
            got, want = sorted(measurements), sorted(spec.measurements)
            self.violations.append(f"{name}: measurements {got} != catalog {want}")
        if set(metadata) != set(spec.metadata):
            self.violations.append(
                f"{name}: metadata {sorted(metadata)} != catalog {sorted(spec.metadata)}"
            )

    def named(self, *name: str, **metadata: Any) -> list[tuple[dict[str, float], dict[str, Any]]]:
        """The events called ``name`` whose metadata has these values.

        Filter by the component's own name wherever a test checks counts: a component left
        by an earlier test (a leaked lease collected now, a worker that ends late) may emit
        while this test's log listens.
        """
        return [
            (m, md)
            for n, m, md in self.records
            if n == name and all(md.get(k) == v for k, v in metadata.items())
        ]


@pytest.fixture(autouse=True)
def event_log() -> Iterator[EventLog]:
    """Attached to every event in every test: what is emitted must match docs/events.md."""
    log = EventLog()
    events.attach("tests.event_log", events.ALL, log)
    try:
        yield log
    finally:
        events.detach("tests.event_log")
    assert not log.violations, "\n".join(log.violations)
