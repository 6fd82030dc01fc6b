"""What a rate limit adds to a request in Flask and Django, buttress's against Flask-Limiter's
and django-ratelimit's.

    make bench BENCH=wsgi        (or: .venv/bin/python benchmarks/wsgi.py [--quick])

Each app is called in process as a WSGI server calls it: ``app(environ, start_response)`` with
a prepared environ, the body read and closed. No client and no server: what is timed is the
framework and the limit. Overhead = candidate - the same app without a limit; every limit is
far above what the run reaches, so every request is admitted. Every limiter keeps its
counts in process memory (buttress's memory backend, Flask-Limiter's ``memory://``,
django-ratelimit's local-memory cache).

1. Flask (one view answering ``"hello"``): buttress's extension with a default rate limit
   (``BUTTRESS_RATE_LIMIT``, its ``RateLimit`` fields on, its default, and off) and its
   ``@rate_limit`` view decorator, against Flask-Limiter's ``default_limits`` (its
   ``X-RateLimit`` fields off, its default, and on).
2. Django (one view answering ``"hello"``): buttress's middleware with a default rate limit
   and its ``@rate_limit`` decorator, against django-ratelimit's ``@ratelimit(key="ip")``
   (which sends no fields).

Each round times every candidate in turn (process CPU time); the best round of each is kept.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

from _timing import measure, report, time_sync

QUICK = "--quick" in sys.argv
N = 2_000 if QUICK else 10_000
ROUNDS = 3 if QUICK else 7
HUGE = 10**9  # per second: never reached
LIMITER = {"api": {"scopes": [{"name": "ip", "limit": HUGE, "window": 1.0}]}}


def environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.1",
        "HTTP_HOST": "bench",
        "HTTP_USER_AGENT": "bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    if not status.startswith("200"):
        raise AssertionError(f"the benchmark's request was answered {status}")


def request(app: Callable[..., Any], path: str = "/") -> Callable[[], None]:
    """One request to ``app`` for ``path``, as a WSGI server makes it (a fresh environ each
    time)."""

    def one() -> None:
        env = environ()
        env["PATH_INFO"] = path
        body = app(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return one


# -- 1. Flask --------------------------------------------------------------------------------------


def flask_apps() -> dict[str, Callable[[], None]]:
    from flask import Flask

    import buttress as bt
    from buttress.integrations.flask import Buttress, rate_limit

    def app(**config: Any) -> Flask:
        made = Flask("bench")
        made.config.update(config)
        return made

    def hello() -> str:
        return "hello"

    bare = app()
    bare.add_url_rule("/", "hello", hello)
    out = {"bare Flask": request(bare)}

    for name, headers in (("buttress", True), ("buttress headers=False", False)):
        limited = app(
            BUTTRESS_CONFIG={"rate_limiting": {"limiters": LIMITER}},
            BUTTRESS_RATE_LIMIT={"limiter": "api", "key": "ip"},
            BUTTRESS_RATE_LIMIT_HEADERS=headers,
        )
        limited.add_url_rule("/", "hello", hello)
        Buttress(limited)
        out[name] = request(limited)

    decorated = app()
    own = bt.RateLimiter([bt.Scope("ip", HUGE, 1.0)], name="flask_view")
    decorated.add_url_rule("/", "hello", rate_limit(own)(hello))
    Buttress(decorated, infrastructure=bt.Infrastructure())
    out["buttress @rate_limit"] = request(decorated)

    try:
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address
    except ImportError:
        print("Flask-Limiter is not installed: pip install Flask-Limiter")
        return out
    for name, headers in (("Flask-Limiter", False), ("Flask-Limiter headers", True)):
        theirs = app(RATELIMIT_HEADERS_ENABLED=headers)
        theirs.add_url_rule("/", "hello", hello)
        Limiter(
            get_remote_address,
            app=theirs,
            default_limits=[f"{HUGE} per second"],
            storage_uri="memory://",
        )
        out[name] = request(theirs)
    return out


# -- 2. Django -------------------------------------------------------------------------------------


def django_apps() -> dict[str, Callable[[], None]]:
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, HttpResponse
    from django.test.utils import override_settings
    from django.urls import path

    import buttress as bt
    from buttress.integrations.django import rate_limit

    def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse("hello")

    own = bt.RateLimiter([bt.Scope("ip", HUGE, 1.0)], name="django_view")
    views: dict[str, Callable[..., Any]] = {
        "bare": hello,
        "buttress @rate_limit": rate_limit(own)(hello),
    }
    try:
        from django_ratelimit.decorators import ratelimit

        views["django-ratelimit"] = ratelimit(key="ip", rate=f"{HUGE}/s")(hello)
    except ImportError:
        print("django-ratelimit is not installed: pip install django-ratelimit")

    module = sys.modules[__name__]
    slugs = {name: name.split()[0] for name in views}  # "bare", "buttress", "django-ratelimit"
    module.urlpatterns = [  # type: ignore[attr-defined]
        path(slugs[name], view) for name, view in views.items()
    ]
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["bench"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        SECRET_KEY="bench",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        BUTTRESS={
            "config": {"rate_limiting": {"limiters": LIMITER}},
            "rate_limit": {"limiter": "api", "key": "ip"},
        },
    )
    django.setup()

    def handler(*middleware: str) -> WSGIHandler:
        with override_settings(MIDDLEWARE=list(middleware)):  # read once, when made
            return WSGIHandler()

    plain = handler()
    out = {"bare Django": request(plain, "/bare")}
    with_middleware = handler("buttress.integrations.django.ButtressMiddleware")
    out["buttress middleware"] = request(with_middleware, "/bare")
    for name in views:
        if name != "bare":
            out[name] = request(plain, "/" + slugs[name])
    return out


def main() -> None:
    best = measure(flask_apps(), time_sync, N, ROUNDS)
    over = report("1. Flask app, rate limit", best, "bare Flask", "buttress", N, ROUNDS)
    if "Flask-Limiter" in over:
        print(f"   bare request {best['bare Flask'] / 1000:.1f} µs; like for like:")
        for mine, theirs in (
            ("buttress", "Flask-Limiter headers"),
            ("buttress headers=False", "Flask-Limiter"),
        ):
            print(
                f"   {mine} adds {over[mine] / 1000:.1f} µs, {theirs} {over[theirs] / 1000:.1f} "
                f"µs: {over[mine] / over[theirs]:.3f} of it"
            )
    best = measure(django_apps(), time_sync, N, ROUNDS)
    over = report("2. Django app, rate limit", best, "bare Django", "buttress middleware",
                  N, ROUNDS)  # fmt: skip
    if "django-ratelimit" in over:
        print(
            f"   bare request {best['bare Django'] / 1000:.1f} µs; django-ratelimit adds "
            f"{over['django-ratelimit'] / 1000:.1f} µs, the buttress middleware "
            f"{over['buttress middleware'] / 1000:.1f} µs with its RateLimit fields "
            f"({over['buttress middleware'] / over['django-ratelimit']:.3f} of it)"
        )


if __name__ == "__main__":
    main()
