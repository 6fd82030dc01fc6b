"""Write docs/events.md from the event catalog (src/buttress/_catalog.py).

python tools/gen_events_doc.py          # rewrite the page
python tools/gen_events_doc.py --check  # exit 1 if the page is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from buttress._catalog import CATALOG  # noqa: E402

PAGE = ROOT / "docs" / "events.md"

HEADER = """\
# Telemetry events

buttress reports what it does on a small in-process bus, `buttress.events`, in the manner of
Erlang's `:telemetry`. An event has a name (a tuple of strings), numeric `measurements`
(durations in seconds) and a `metadata` dict. Handlers run synchronously where the event is
emitted; one that raises is detached, logged on the `buttress.events` logger and reported as
`("buttress", "telemetry", "handler_failure")`. Emitting costs one dict lookup when nothing
listens.

```python
from buttress import events


def log_transition(name, measurements, metadata):
    md = metadata
    print(md["breaker"], md["from_state"], "->", md["to_state"], md["reason"])


STATE_CHANGE = ("buttress", "circuit_breaker", "state_change")
events.attach("my-app.breaker-log", [STATE_CHANGE], log_transition)
...
events.detach("my-app.breaker-log")
```

`events.attach(handler_id, events.ALL, fn)` receives every event (exporters and loggers do
this). `events.span(name, metadata)` emits `name + ("start",)`, then `("stop",)` or
`("exception",)` with the `duration`, for your own instrumentation.

This page is generated from `src/buttress/_catalog.py` by `tools/gen_events_doc.py`; the test
suite checks every event it sees emitted against it (name, measurement keys, metadata keys).

## Catalog
"""


def render() -> str:
    out = [HEADER]
    groups: dict[str, list[str]] = {}
    for spec in CATALOG.values():
        group = spec.name[1]
        row = "| `{!r}` | {} | {} | {} |".format(
            spec.name,
            ", ".join(f"`{k}`" for k in spec.measurements) or "–",
            ", ".join(f"`{k}`" for k in spec.metadata) or "–",
            spec.description.replace("|", "\\|"),
        )
        groups.setdefault(group, []).append(row)
    for group, rows in groups.items():
        out.append(f"\n### {group}\n")
        out.append("| event | measurements | metadata | meaning |")
        out.append("|---|---|---|---|")
        out.extend(rows)
    return "\n".join(out) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python tools/gen_events_doc.py")
            return 1
        return 0
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
