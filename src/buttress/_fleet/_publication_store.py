"""The published configuration's Redis shell: keys, the two scripts, a reader.

Two keys per fleet namespace, sharing a Redis Cluster hash tag so that one script touches
both: ``<namespace>:fleet:config:{<namespace>}:record``, the record (a hash: ``generation``,
``action``, ``document``, ``by``, ``reason``, ``at``; it never expires, so a process started
later finds it), and ``...:running``, each process's report (a hash of process id to its
heartbeat expiry, the generation it runs, the one it saw, its state and why it refused),
which expires once no process reports any more. Time is Redis's own (``TIME``), in
milliseconds. A failure of Redis raises what redis-py raises.
"""

from __future__ import annotations

from typing import Any

from ..ratelimit._functions import Library, ScriptCall
from ._publication import NONE, Following, Publication
from ._redis import _lua, _text

__all__ = ["PublicationStore"]

_SCRIPTS = {"fleet_publish": "publish.lua", "fleet_follow": "follow.lua"}
_MAX_REFUSAL = 500  # characters of a refusal kept in a process's report


class PublicationStore:
    """The two scripts on one sync ``redis.Redis`` client."""

    __slots__ = ("_follow", "_publish", "client", "namespace")

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        texts = {name: _lua(file) for name, file in _SCRIPTS.items()}
        library = Library("", texts)
        state = {"functions": type(client).__name__ != "RedisCluster"}
        self._publish, self._follow = (
            ScriptCall(client, library, name, client.register_script(texts[name]), state)
            for name in _SCRIPTS
        )

    def keys(self) -> list[bytes]:
        base = f"{self.namespace}:fleet:config:{{{self.namespace}}}:"
        return [(base + k).encode("utf-8", "surrogatepass") for k in ("record", "running")]

    def publish(self, document: str, by: str, reason: str) -> tuple[int, int]:
        """Record ``document`` as the fleet's configuration: ``(generation, at_ms)``."""
        return self._record("publish", document, by, reason)

    def withdraw(self, by: str, reason: str) -> tuple[int, int]:
        """Withdraw the published configuration: ``(generation, at_ms)``; generation 0 when
        nothing was published (then nothing was recorded)."""
        return self._record("withdraw", "", by, reason)

    def _record(self, action: str, document: str, by: str, reason: str) -> tuple[int, int]:
        reply = self._publish(
            keys=self.keys()[:1],
            args=tuple(x.encode("utf-8", "surrogatepass") for x in (action, document, by, reason)),
        )
        return int(reply[0]), int(reply[1])

    def follow(self, pid: str, following: Following, heartbeat_ms: int) -> Publication | None:
        """Report what this process runs; the record when its generation differs from the
        one ``following`` saw, else ``None``. One script call."""
        args = (
            pid,
            str(following.running),
            str(following.seen),
            following.state,
            " ".join(following.refusal.split())[:_MAX_REFUSAL],
            str(heartbeat_ms),
        )
        reply = self._follow(
            keys=self.keys(), args=tuple(a.encode("utf-8", "surrogatepass") for a in args)
        )
        generation = int(reply[0])
        if len(reply) == 1:
            return None
        if generation == 0:
            return NONE
        action, document, by, reason = (_text(x) for x in reply[1:5])
        return Publication(generation, action, document, by, reason, int(reply[5]))

    def read(self) -> dict[str, Any] | None:
        """The record (without its document) and every live process's report, for an operator
        (``buttress fleet status``): reads only, so the reader is never counted as a process.
        ``None`` when nothing was ever published."""
        record_key, running_key = self.keys()
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.hmget(record_key, "generation", "action", "by", "reason", "at")
        pipe.hstrlen(record_key, "document")
        pipe.hgetall(running_key)
        (secs, micros), fields, size, reports = pipe.execute()
        if fields[0] is None:
            return None
        now_ms = int(secs) * 1000 + int(micros) // 1000
        generation, action, by, reason, at = (_text(x) if x is not None else "" for x in fields)
        processes = []
        for pid, report in sorted(reports.items()):
            expires, running, seen, state, *why = _text(report).split(" ", 4)
            if int(expires) > now_ms:
                processes.append(
                    {
                        "process": _text(pid),
                        "running": int(running),
                        "seen": int(seen),
                        "state": state,
                        "refused": why[0] if why and why[0] else None,
                    }
                )
        gen = int(generation)
        return {
            "generation": gen,
            "action": action,
            "by": by,
            "reason": reason,
            "at": int(at or 0) / 1000,
            "document_bytes": int(size),
            "processes": processes,
            # of the live processes, how many run the published document (None: withdrawn)
            "running_it": sum(1 for p in processes if p["running"] == gen)
            if action == "publish"
            else None,
        }
