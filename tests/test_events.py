"""The telemetry bus and its catalog."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from buttress import events
from buttress._catalog import CATALOG

ROOT = Path(__file__).resolve().parent.parent


def test_attach_emit_detach() -> None:
    got: list[tuple[Any, ...]] = []
    events.attach("t1", [("app", "a"), ("app", "b")], lambda n, m, md: got.append((n, m, md)))
    try:
        events.emit(("app", "a"), {"x": 1}, {"k": "v"})
        events.emit(("app", "c"), {"x": 2})
        events.emit(("app", "b"))
    finally:
        assert events.detach("t1") is True
    events.emit(("app", "a"), {"x": 3})
    assert got == [(("app", "a"), {"x": 1}, {"k": "v"}), (("app", "b"), {}, {})]
    assert events.detach("t1") is False


def test_duplicate_handler_id_is_refused() -> None:
    events.attach("dup", ("app", "a"), lambda n, m, md: None)
    try:
        with pytest.raises(ValueError, match="already attached"):
            events.attach("dup", ("app", "b"), lambda n, m, md: None)
    finally:
        events.detach("dup")


def test_bad_event_names_are_refused() -> None:
    with pytest.raises(TypeError):
        events.attach("bad", [("app", 1)], lambda n, m, md: None)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        events.attach("bad", [("app",)], "not callable")  # type: ignore[arg-type]
    # A str is iterable: unchecked, it would listen to ('b',), ('u',), ... and never fire.
    with pytest.raises(TypeError, match="names is a str"):
        events.attach("bad", "buttress", lambda n, m, md: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pass one event name as a tuple, \('app', 'x'\)"):
        events.attach("bad", ["app", "x"], lambda n, m, md: None)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="non-empty"):
        events.attach("bad", (), lambda n, m, md: None)
    assert "bad" not in events.handlers()


def test_raising_handler_is_detached_reported_and_never_breaks_the_caller(
    caplog: pytest.LogCaptureFixture, event_log: Any
) -> None:
    calls = []

    def broken(name: Any, m: Any, md: Any) -> None:
        calls.append(name)
        raise RuntimeError("handler bug")

    events.attach("broken", [("app", "tick")], broken)
    with caplog.at_level(logging.ERROR, logger="buttress.events"):
        events.emit(("app", "tick"))  # does not raise
        events.emit(("app", "tick"))
    assert calls == [("app", "tick")]  # detached after the first failure
    assert "broken" not in events.handlers()
    assert "handler 'broken' raised" in caplog.text
    failures = event_log.named("buttress", "telemetry", "handler_failure")
    assert len(failures) == 1
    assert failures[0][1]["handler_id"] == "broken"
    assert failures[0][1]["event"] == ("app", "tick")


def test_enabled_reflects_handlers() -> None:
    events.detach("tests.event_log")  # the autouse catch-all would make everything enabled
    try:
        assert not events.enabled(("app", "quiet"))
        events.attach("q", [("app", "quiet")], lambda n, m, md: None)
        assert events.enabled(("app", "quiet"))
        events.detach("q")
        assert not events.enabled(("app", "quiet"))
    finally:
        events.attach("tests.event_log", events.ALL, lambda n, m, md: None)


def test_span_emits_start_stop_and_exception(event_log: Any) -> None:
    with events.span(("app", "job"), {"job": "a"}) as extra:
        extra["rows"] = 3
    with pytest.raises(KeyError), events.span(("app", "job"), {"job": "b"}):
        raise KeyError("x")
    names = [n for n, _, _ in event_log.records]
    assert names == [
        ("app", "job", "start"),
        ("app", "job", "stop"),
        ("app", "job", "start"),
        ("app", "job", "exception"),
    ]
    stop = event_log.records[1]
    assert stop[1]["duration"] >= 0 and stop[2] == {"job": "a", "rows": 3}
    exc = event_log.records[3]
    assert exc[2]["kind"] == "KeyError" and exc[2]["job"] == "b"


def test_docs_page_matches_the_catalog() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_events_doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    page = (ROOT / "docs" / "events.md").read_text()
    documented = set(re.findall(r"^\| `(\(.*?\))` \|", page, flags=re.M))
    assert documented == {repr(name) for name in CATALOG}


def test_every_catalog_event_is_emitted_somewhere_in_the_source() -> None:
    """No catalog entry is dead: each name's last part appears in an emit in src/."""
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "buttress").rglob("*.py"))
    for name in CATALOG:
        if name == ("buttress", "telemetry", "handler_failure"):
            continue
        assert f'"{name[-1]}"' in source.replace("_catalog", ""), name
