"""What a process makes of the fleet's published configuration (``_fleet/_publication.py``,
pure), and the follow script's answers on a real Redis (``lua/follow.lua``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from buttress._fleet._publication import (
    NONE,
    Following,
    Publication,
    applied,
    file_applies,
    refused,
    seen,
)
from buttress._fleet._publication_store import PublicationStore

PUBLISHED = Publication(3, "publish", "[fleet]\n", "alice", "incident 7", 1_700_000_000_000)
WITHDRAWN = Publication(4, "withdraw", "", "bob", "done", 1_700_000_100_000)


def test_a_publication_is_to_be_applied_and_wins_over_the_file() -> None:
    following, to_apply = seen(Following(), PUBLISHED)
    assert to_apply
    assert (following.seen, following.running, following.state) == (3, 0, "pending")
    assert not file_applies(following)
    done = applied(following)
    assert (done.running, done.state, done.refusal) == (3, "applied", "")
    assert not file_applies(done)


def test_a_refusal_keeps_what_the_process_ran_and_says_why() -> None:
    before = applied(seen(Following(), PUBLISHED)[0])
    again = Publication(5, "publish", "", "carol", "", 0)
    after = refused(seen(before, again)[0], "fleet: cannot change by reload")
    assert (after.seen, after.running, after.state) == (5, 3, "refused")
    assert after.refusal == "fleet: cannot change by reload"
    assert not file_applies(after)  # the fleet's publication is in force, here refused
    assert applied(seen(after, Publication(6, "publish", "", "", "", 0))[0]).refusal == ""


def test_a_withdrawal_or_a_vanished_record_changes_nothing_the_process_runs() -> None:
    running = applied(seen(Following(), PUBLISHED)[0])
    for record, state in ((WITHDRAWN, "withdrawn"), (NONE, "none")):
        following, to_apply = seen(running, record)
        assert not to_apply
        assert (following.running, following.state, following.seen) == (
            3,
            state,
            record.generation,
        )
        assert file_applies(following)


@pytest.fixture
def store(redis_url: str) -> Iterator[PublicationStore]:
    client = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    s = PublicationStore(client, "publication-" + uuid.uuid4().hex[:8])
    yield s
    client.delete(*s.keys())  # the record never expires by itself
    client.close()


def test_the_follow_script_answers_the_record_only_when_its_generation_differs(
    store: PublicationStore,
) -> None:
    assert store.follow("p1", Following(), 300) is None  # nothing published: generation 0
    assert store.read() is None
    generation, at_ms = store.publish("[fleet]\n", "alice", "why")
    record = store.follow("p1", Following(), 300)
    assert record == Publication(generation, "publish", "[fleet]\n", "alice", "why", at_ms)
    following = applied(seen(Following(), record)[0])
    assert store.follow("p1", following, 300) is None
    report = store.read()
    assert report is not None
    assert (report["generation"], report["running_it"], report["document_bytes"]) == (1, 1, 8)
    assert report["processes"] == [
        {"process": "p1", "running": 1, "seen": 1, "state": "applied", "refused": None}
    ]
    store.client.delete(*store.keys()[:1])  # the record gone (Redis flushed, say)
    assert store.follow("p1", following, 300) == NONE


def test_reports_of_processes_gone_are_dropped_when_another_joins(
    store: PublicationStore,
) -> None:
    store.publish("", "alice", "")
    running_key = store.keys()[1]
    store.client.hset(running_key, "gone", "1 1 1 applied ")  # expired long ago
    store.follow("p1", Following(), 300)
    assert set(store.client.hkeys(running_key)) == {b"p1"}
    store.client.hset(running_key, "gone", "1 1 1 applied ")
    store.follow("p1", Following(), 300)  # p1 again: nothing read whole, nothing dropped
    assert set(store.client.hkeys(running_key)) == {b"p1", b"gone"}
    assert [p["process"] for p in store.read()["processes"]] == ["p1"]  # type: ignore[index]


def test_a_withdrawal_needs_a_publication(store: PublicationStore) -> None:
    assert store.withdraw("bob", "")[0] == 0
    store.publish("", "alice", "")
    assert store.withdraw("bob", "done")[0] == 2
    assert store.withdraw("bob", "again")[0] == 0
    report = store.read()
    assert report is not None
    assert (report["action"], report["by"], report["running_it"]) == ("withdraw", "bob", None)
    assert report["document_bytes"] == 0
