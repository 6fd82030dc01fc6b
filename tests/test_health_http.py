"""The health endpoints in the frameworks they are served from: Starlette (its TestClient and a
real uvicorn), Flask and Django, each through its own routing; ``/health`` answers 200 or 503
at once, ``livez`` and ``readyz`` beside it, and no body carries what a driver said."""

from __future__ import annotations

import http.client
import json
import threading
import types
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import buttress as bt
from buttress._health import probe_for
from servers import free_port, wait_until

CONFIG = {
    "memory_manager": {"enabled": False},
    "circuit_breakers": {"db": {}},
    "connection_pools": {"db": {"factory": "sqlite3:connect", "args": [":memory:"]}},
}


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    with bt.Infrastructure("web", CONFIG, clock=clock, env={}, background=False) as i:
        yield i


def make_unhealthy(infra: bt.Infrastructure) -> None:
    infra.pools["db"].close()  # a closed pool fails its check
    assert infra.health().overall_status == "unhealthy"


def answers(get: Any, path: str) -> tuple[int, Any]:
    """``(status, JSON body)`` of a GET through a framework's test client."""
    r = get(path)
    status = getattr(r, "status_code", None)
    body = r.content if hasattr(r, "content") else r.data
    return status, json.loads(body) if body else None


def check_the_three(get: Any, infra: bt.Infrastructure, health: str = "/health") -> None:
    """``health`` answers the report, 200 then 503, never a redirect; livez always 200;
    readyz follows the report."""
    assert answers(get, health)[0] == 200
    status, doc = answers(get, health)
    assert (status, doc["status"], doc["serviceId"]) == (200, "pass", "web")
    assert "connection_pool:db" in doc["checks"]
    assert answers(get, f"{health}/livez") == (200, {"status": "pass"})
    status, doc = answers(get, f"{health}/readyz")
    assert (status, doc["status"]) == (200, "pass")
    make_unhealthy(infra)
    status, doc = answers(get, health)
    assert (status, doc["status"]) == (503, "fail")
    assert doc["checks"]["connection_pool:db"][0]["output"] == "pool is closed"
    assert answers(get, f"{health}/livez") == (200, {"status": "pass"})  # alive all the same
    status, doc = answers(get, f"{health}/readyz")
    assert (status, doc["status"], doc["serviceId"]) == (503, "fail", "web")
    assert "checks" not in doc  # readiness is the verdict; the report is one path up


# -- Starlette -------------------------------------------------------------------------------


def test_starlette_route_and_mount_answer_at_the_path_itself(infra: bt.Infrastructure) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    health = bt.health_asgi_app(infra)
    app = Starlette(routes=[Route("/health", health), Mount("/health", health)])
    with TestClient(app) as client:
        get = lambda path: client.get(path, follow_redirects=False)  # noqa: E731
        check_the_three(get, infra)
        assert client.get("/health/", follow_redirects=False).status_code == 503
        head = client.head("/health")
        assert (head.status_code, head.content) == (503, b"")
        assert int(head.headers["content-length"]) > 0  # what a GET would carry
        post = client.post("/health/readyz")
        assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
        assert client.get("/health").headers["cache-control"] == "no-store"


def test_starlette_add_route_takes_the_app(infra: bt.Infrastructure) -> None:
    # add_route calls a function endpoint with a Request; the app is an object, so Starlette
    # serves it as an ASGI app instead (this raised TypeError when the app was a function).
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    app = Starlette()
    health = bt.health_asgi_app(infra)
    for path in ("/health", "/health/livez", "/health/readyz"):
        app.add_route(path, health)
    with TestClient(app) as client:
        check_the_three(lambda path: client.get(path, follow_redirects=False), infra)


def test_a_starlette_mount_alone_answers_only_below_its_path(infra: bt.Infrastructure) -> None:
    # Starlette's router, not the mounted app, answers the bare path of a Mount (a redirect
    # to the path with a slash): why the docs add a Route for /health itself.
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    app = Starlette(routes=[Mount("/health", bt.health_asgi_app(infra))])
    with TestClient(app) as client:
        assert client.get("/health", follow_redirects=False).status_code == 307
        check_the_three(lambda path: client.get(path, follow_redirects=False), infra, "/health/")


def test_uvicorn_serves_the_endpoints(infra: bt.Infrastructure) -> None:
    pytest.importorskip("starlette")
    uvicorn = pytest.importorskip("uvicorn")
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    health = bt.health_asgi_app(infra)
    app = Starlette(routes=[Route("/health", health), Mount("/health", health)])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to start")

        def get(path: str) -> types.SimpleNamespace:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return types.SimpleNamespace(status_code=r.status, content=r.read())
            finally:
                conn.close()

        check_the_three(get, infra)
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()


# -- Flask ----------------------------------------------------------------------------------


def test_flask_mounts_the_wsgi_app(infra: bt.Infrastructure) -> None:
    flask = pytest.importorskip("flask")
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = flask.Flask("shop")
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/health": bt.health_wsgi_app(infra)}
    )
    client = app.test_client()
    check_the_three(client.get, infra)
    head = client.head("/health")
    assert (head.status_code, head.data) == (503, b"")


def test_flask_view_functions(infra: bt.Infrastructure) -> None:
    flask = pytest.importorskip("flask")

    app = flask.Flask("shop")

    @app.get("/health", defaults={"probe": "health"})
    @app.get("/health/<any(livez, readyz):probe>")
    def health(probe: Any) -> Any:
        status, headers, body = bt.health_response(infra, probe)
        return body, status, headers

    check_the_three(app.test_client().get, infra)


# -- Django ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_settings() -> None:
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="health-endpoints-test",
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
        django.setup()


urlpatterns: list[Any] = []  # ROOT_URLCONF; each test routes through override_settings


def test_django_view_function(infra: bt.Infrastructure, django_settings: None) -> None:
    from django.http import HttpRequest, HttpResponse
    from django.test import Client, override_settings
    from django.urls import path

    def health(request: HttpRequest, probe: Any = "health") -> HttpResponse:
        status, headers, body = bt.health_response(infra, probe)
        return HttpResponse(body, status=status, headers=headers)

    urls = types.ModuleType("urls")  # what ROOT_URLCONF names: a module with urlpatterns
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("health", health),
        path("health/livez", health, {"probe": "livez"}),
        path("health/readyz", health, {"probe": "readyz"}),
    ]
    with override_settings(ROOT_URLCONF=urls):
        check_the_three(Client().get, infra)


# -- what a public endpoint shows -----------------------------------------------------------


def test_the_http_body_carries_no_driver_message(pg_dsn: str) -> None:
    # A real PostgreSQL refusal names the server, its port and the role: for the operator
    # (logs, the verbose report), not for whoever can reach the health endpoint.
    where = urlsplit(pg_dsn)
    dsn = f"postgresql://no_such_role_8723:Sentinel-pw-8723@{where.hostname}:{where.port}/postgres"
    cfg = {
        "memory_manager": {"enabled": False},
        "connection_pools": {
            "db": {"factory": "psycopg:connect", "args": [dsn], "min_size": 1},
        },
    }
    with bt.Infrastructure("web", cfg, env={}, background=False) as infra:
        infra.run_maintenance()  # the min_size connect, refused by the server
        check = next(c for c in infra.health().checks if c.name == "db")
        assert check.status == "fail"
        assert check.detail is not None and "no_such_role_8723" in check.detail
        for app in (bt.health_wsgi_app(infra), bt.health_wsgi_app(infra.health)):
            status, body = call_wsgi(app, "/health")
            assert status.startswith("503")
            doc = json.loads(body)
            output = doc["checks"]["connection_pool:db"][0]["output"]
            assert output == (
                "no connection (0 waiting); 1 connect(s) failed in a row, last: OperationalError"
            )
            for leak in ("no_such_role_8723", str(where.port), "Sentinel-pw-8723"):
                assert leak.encode() not in body
        report = infra.health()
        assert "no_such_role_8723" not in json.dumps(report.to_dict(), default=str)
        assert "no_such_role_8723" not in json.dumps(report.to_health_json())
        # Verbose, for operators: what the server said (the password still masked).
        verbose = json.dumps(report.to_dict(verbose=True), default=str)
        assert "no_such_role_8723" in verbose
        assert report.to_dict(verbose=True)["checks"][0]["detail"] == check.detail
        status, body = call_wsgi(bt.health_wsgi_app(infra, verbose=True), "/health")
        assert b"no_such_role_8723" in body and b"Sentinel-pw-8723" not in body


def call_wsgi(app: Any, path: str, method: str = "GET") -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
    return seen[0], body


# -- the pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "probe"),
    [
        ("", "health"),
        ("/", "health"),
        ("/health", "health"),
        ("/health/", "health"),
        ("/livez", "livez"),
        ("/health/livez", "livez"),
        ("/health/livez/", "livez"),
        ("/api/v1/health/readyz", "readyz"),
        ("/health/livezz", "health"),
    ],
)
def test_the_probe_is_the_last_part_of_the_path(path: str, probe: str) -> None:
    assert probe_for(path) == probe


def test_health_response_refuses_an_unknown_probe(infra: bt.Infrastructure) -> None:
    with pytest.raises(ValueError, match="probe must be one of health, livez, readyz, got 'x'"):
        bt.health_response(infra, "x")  # type: ignore[arg-type]


def test_livez_asks_no_component() -> None:
    def source() -> bt.HealthReport:
        raise AssertionError("livez must not build a report")

    assert bt.health_response(source, "livez") == (
        200,
        {"content-type": "application/health+json", "cache-control": "no-store"},
        b'{"status":"pass"}',
    )
