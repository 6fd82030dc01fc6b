"""The dashboard's server: the page and its assets under a strict CSP, the frames as server-sent
events through a real uvicorn (mounted in Starlette), and the actions: nothing changes without
the admin token, from another origin, or when actions are off."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import buttress as bt
from buttress._dashboard._actions import ACTIONS
from servers import free_port, wait_until

TOKEN = "s3cret-admin-token-0123456789"
CONFIG: dict[str, Any] = {
    "memory_manager": {"enabled": False},
    "circuit_breakers": {"payments": {"reset_timeout_jitter": 0.0}, "search": {}},
    "rate_limiting": {
        "limiters": {"api": {"scopes": [{"name": "user", "limit": 2, "window": "1s"}]}}
    },
    "chaos": {"enabled": True},
}


@pytest.fixture
def infra() -> Iterator[bt.Infrastructure]:
    infra = bt.Infrastructure("dash", CONFIG, background=False, env={})
    yield infra
    infra.close()


def request(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def act(app: Any, body: Any, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return request(app, "POST", "/api/actions", json=body, headers=headers)


# -- the page ----------------------------------------------------------------------------------


def test_the_page_and_its_assets_load_from_the_package_only(infra: bt.Infrastructure) -> None:
    app = bt.dashboard_app(infra)
    page = request(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(not re.match(r"[a-z]+:|//|/", r) for r in refs), refs  # relative only
    for ref in refs:
        asset = request(app, "GET", "/" + ref)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset.text), ref
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    assert request(app, "GET", "/nothing").status_code == 404
    assert request(app, "POST", "/").status_code == 405


def test_state_is_the_frame_with_history(infra: bt.Infrastructure) -> None:
    doc = request(bt.dashboard_app(infra), "GET", "/api/state").json()
    assert doc["namespace"] == "dash" and doc["full"] is True
    assert [b["name"] for b in doc["breakers"]] == ["payments", "search"]
    assert doc["actions"] == {"enabled": False, "fleet": False, "reload": False}


def test_unknown_host_names_are_refused(infra: bt.Infrastructure) -> None:
    app = bt.dashboard_app(infra, allowed_hosts=("127.0.0.1", "localhost"))
    assert request(app, "GET", "/api/state").status_code == 200
    rebound = request(app, "GET", "/api/state", headers={"host": "attacker.example:8088"})
    assert rebound.status_code == 400 and "Host" in rebound.json()["error"]


def test_bad_settings_are_named() -> None:
    infra = bt.Infrastructure("dash", CONFIG, background=False, env={})
    try:
        with pytest.raises(ValueError, match="token must be a string of at least 16"):
            bt.dashboard_app(infra, token="short")
        with pytest.raises(ValueError, match="interval"):
            bt.dashboard_app(infra, interval=0)
        with pytest.raises(TypeError, match="expected an Infrastructure"):
            bt.dashboard_app(object())
    finally:
        infra.close()


# -- actions -------------------------------------------------------------------------------------

EVERY_ACTION = [
    {"action": "force_open", "target": "payments", "reason": "r"},
    {"action": "disable", "target": "payments", "reason": "r"},
    {"action": "reset", "target": "payments", "reason": "r"},
    {"action": "stop_chaos", "reason": "r"},
    {"action": "reload", "reason": "r"},
]
assert {a["action"] for a in EVERY_ACTION} == set(ACTIONS)


def unchanged(infra: bt.Infrastructure) -> bool:
    return (
        infra.breakers["payments"].state == "closed"
        and infra.chaos.enabled
        and not infra.operator_actions
        and not infra.reloads
    )


@pytest.mark.parametrize("body", EVERY_ACTION, ids=lambda b: b["action"])
@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (None, {}, 401),
        ("wrong-token-wrong-token-0000", {}, 401),
        (TOKEN[:-1], {}, 401),
        (TOKEN, {"origin": "https://attacker.example"}, 403),
        (TOKEN, {"sec-fetch-site": "cross-site"}, 403),
        (TOKEN, {"sec-fetch-site": "same-site"}, 403),
    ],
    ids=["missing", "wrong", "prefix", "origin", "cross-site", "same-site"],
)
def test_no_request_without_the_token_or_from_elsewhere_changes_anything(
    infra: bt.Infrastructure,
    tmp_path: Path,
    body: dict[str, Any],
    token: str | None,
    headers: dict[str, str],
    status: int,
) -> None:
    config = tmp_path / "b.toml"
    config.write_text("[circuit_breakers.payments]\nfailure_threshold = 9\n")
    app = bt.dashboard_app(infra, token=TOKEN, reload_from=config)
    answer = act(app, body, token, **headers)
    assert answer.status_code == status, answer.text
    assert "error" in answer.json()
    assert unchanged(infra)


@pytest.mark.parametrize("body", EVERY_ACTION, ids=lambda b: b["action"])
def test_actions_are_off_without_a_token(infra: bt.Infrastructure, body: dict[str, Any]) -> None:
    app = bt.dashboard_app(infra)
    answer = act(app, body)
    assert answer.status_code == 403 and "actions are off" in answer.json()["error"]
    assert unchanged(infra)


def test_a_form_post_from_another_site_is_refused(infra: bt.Infrastructure) -> None:
    """A cross-site HTML form can send only 'simple' content types, never JSON."""
    app = bt.dashboard_app(infra, token=TOKEN)
    answer = request(
        app,
        "POST",
        "/api/actions",
        content=b'{"action": "force_open", "target": "payments", "reason": "x"}',
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "text/plain"},
    )
    assert answer.status_code == 400 and "application/json" in answer.json()["error"]
    assert request(app, "GET", "/api/actions").status_code == 405
    assert unchanged(infra)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"action": "explode", "reason": "r"}, 400, "action: must be one of"),
        ({"action": "force_open", "target": "payments"}, 400, "reason: required"),
        ({"action": "force_open", "target": "payments", "reason": "  "}, 400, "reason"),
        ({"action": "force_open", "target": "payments", "reason": "x" * 501}, 400, "at most"),
        ({"action": "force_open", "target": "nope", "reason": "r"}, 404, "no breaker named"),
        ({"action": "force_open", "reason": "r"}, 400, "needs a breaker"),
        ({"action": "reset", "target": "payments", "fleet": True, "reason": "r"}, 400, "fleet"),
        ({"action": "reset", "target": "payments", "fleet": "yes", "reason": "r"}, 400, "fleet"),
        ({"action": "stop_chaos", "target": "payments", "reason": "r"}, 400, "no target"),
        ({"action": "reload", "reason": "r"}, 400, "configuration file"),
        ([1, 2], 400, "a JSON object"),
        ({"action": "stop_chaos", "reason": "r", "by": 7}, 400, "by: the operator's name"),
    ],
)
def test_bad_requests_are_named(
    infra: bt.Infrastructure, body: Any, status: int, words: str
) -> None:
    answer = act(bt.dashboard_app(infra, token=TOKEN), body)
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert unchanged(infra)


def test_each_action_acts_and_is_recorded_in_health_and_events(
    infra: bt.Infrastructure, tmp_path: Path, event_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "b.toml"
    config.write_text(
        "[circuit_breakers.payments]\nfailure_threshold = 9\nreset_timeout_jitter = 0.0\n"
        "[circuit_breakers.search]\n"
        '[[rate_limiting.limiters.api.scopes]]\nname = "user"\nlimit = 2\nwindow = "1s"\n'
        "[memory_manager]\nenabled = false\n[chaos]\nenabled = true\n"
    )
    app = bt.dashboard_app(infra, token=TOKEN, reload_from=config)
    payments = infra.breakers["payments"]
    caplog.set_level(logging.INFO)

    assert act(app, {"action": "force_open", "target": "payments", "reason": "incident 7"}).json()[
        "ok"
    ]
    assert payments.state == "forced_open"
    act(app, {"action": "disable", "target": "payments", "reason": "let it through"})
    assert payments.state == "disabled"
    act(app, {"action": "reset", "target": "payments", "reason": "over"})
    assert payments.state == "closed"
    act(app, {"action": "stop_chaos", "reason": "enough"})
    assert not infra.chaos.enabled
    answer = act(app, {"action": "reload", "reason": "new threshold"}).json()
    assert "circuit_breakers.payments" in answer["message"]
    assert payments.config.failure_threshold == 9

    actions = infra.health().to_dict()["operator_actions"]
    assert [(a["action"], a["reason"]) for a in actions] == [
        ("force_open", "incident 7"),
        ("disable", "let it through"),
        ("reset", "over"),
        ("stop_chaos", "enough"),
        ("reload", "new threshold"),
    ]
    assert all(a["by"] == "dashboard (127.0.0.1)" for a in actions)
    act(app, {"action": "reset", "target": "search", "reason": "named", "by": "alice"})
    assert infra.operator_actions[-1]["by"] == "alice via dashboard (127.0.0.1)"
    emitted = event_log.named("buttress", "operator", "action")
    assert [md["action"] for _, md in emitted][:5] == [a["action"] for a in actions]
    assert "incident 7" in caplog.text
    assert TOKEN not in caplog.text  # the token is never logged
    assert TOKEN not in json.dumps(infra.health().to_dict(), default=str)


def test_a_reload_of_a_bad_file_changes_nothing(infra: bt.Infrastructure, tmp_path: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text("[circuit_breakers.payments]\nfailure_threshold = -1\n")
    app = bt.dashboard_app(infra, token=TOKEN, reload_from=config)
    answer = act(app, {"action": "reload", "reason": "try"})
    assert answer.status_code == 400
    assert "failure_threshold" in answer.json()["error"]
    assert unchanged(infra)


def test_top_refused_ids_are_counted_only_when_asked_and_never_in_frames(
    infra: bt.Infrastructure,
) -> None:
    app = bt.dashboard_app(infra, token=TOKEN)
    limiter = infra.limiters["api"]
    for _ in range(5):
        limiter.try_acquire("before-asking")

    def ask() -> httpx.Response:
        return request(
            app,
            "POST",
            "/api/refused",
            json={"limiter": "api", "seconds": 30},
            headers={"authorization": f"Bearer {TOKEN}"},
        )

    assert ask().json()["ids"] == []
    for user, n in (("ann", 6), ("bob", 4)):
        for _ in range(n):
            limiter.try_acquire(user)
    top = ask().json()["ids"]
    assert top == [{"id": "ann", "refused": 4}, {"id": "bob", "refused": 2}]
    assert "ann" not in request(app, "GET", "/api/state").text
    wrong = request(app, "POST", "/api/refused", json={"limiter": "api"})
    assert wrong.status_code == 401
    unknown = request(
        app,
        "POST",
        "/api/refused",
        json={"limiter": "nope"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert unknown.status_code == 404
    asyncio.run(app.aclose())
    assert not any(h.startswith("buttress.dashboard") for h in bt.events.handlers())


# -- the stream, through a real server ---------------------------------------------------------


def read_events(conn: http.client.HTTPConnection, path: str, count: int) -> list[dict[str, Any]]:
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        line = response.readline()
        if line.startswith(b"data: "):
            frames.append(json.loads(line[6:]))
    return frames


def test_the_stream_sends_history_first_then_current_values_mounted_in_starlette(
    infra: bt.Infrastructure,
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    dashboard = bt.dashboard_app(infra, interval=0.1)
    app = Starlette(routes=[Mount("/ops", dashboard)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to start")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ops/")
        page = conn.getresponse()
        assert page.status == 200 and b"static/dashboard.js" in page.read()
        first, second, third = read_events(conn, "/ops/api/stream", 3)
        conn.close()
        assert first["full"] and "history" in first["breakers"][0]
        assert not second["full"] and "history" not in second["breakers"][0]
        assert first["seq"] < second["seq"] < third["seq"]
        # Two pages at once share one feed: one report per interval, not one per page.
        a = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        b = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        seqs_a = [f["seq"] for f in read_events(a, "/ops/api/stream", 3)]
        seqs_b = [f["seq"] for f in read_events(b, "/ops/api/stream", 3)]
        a.close()
        b.close()
        assert set(seqs_a) & set(seqs_b)
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()


def test_guessing_the_token_is_slowed_down(infra: bt.Infrastructure) -> None:
    app = bt.dashboard_app(infra, token=TOKEN)
    body = {"action": "force_open", "target": "payments", "reason": "guess"}
    statuses = [act(app, body, f"guess-{i:04d}-guess-guess").status_code for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    locked = act(app, body)  # even the right token waits out the minute from that address
    assert locked.status_code == 429 and "too many wrong tokens" in locked.json()["error"]
    assert unchanged(infra)
