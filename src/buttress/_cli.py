"""The ``buttress`` command (also ``python -m buttress``).

buttress --version
buttress demo [--json PATH] [--seed N] [--users N]
buttress config check FILE
buttress config publish FILE [--reason TEXT] [--by WHO] [--namespace NAME]
buttress config withdraw --config FILE [--reason TEXT] [--by WHO] [--namespace NAME]
buttress health --config FILE [--namespace NAME] [--timeout SECONDS]
buttress scenarios [SCENARIO ...] [--config FILE]
buttress breaker force-open|disable|reset NAME --config FILE [--reason TEXT] [--by NAME]
buttress fleet status --config FILE
buttress dashboard --config FILE [--host 127.0.0.1] [--port 8088] [--token-file PATH]

buttress's log records (a scenario's expected warnings, a backend found down) are held while a
command runs and written to stderr after its results, never in the middle of them. What it
prints passes through ``_redact``: no password from a URL, a DSN or a pool's ``kwargs`` is
shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import ButtressError, ConfigError, PoolTimeoutError
from ._redact import redact_data, redact_text
from ._version import __version__

if TYPE_CHECKING:
    from ._health import ComponentCheck
    from ._infrastructure import Infrastructure
    from ._pool import AsyncConnectionPool, ConnectionPool
    from .ratelimit._limiter import RateLimiter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buttress", description="buttress: the infrastructure layer for Python services."
    )
    parser.add_argument("--version", action="version", version=f"buttress {__version__}")
    parser.set_defaults(usage=parser)  # whose help a command missing its action prints
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the guide's scenario end to end and print a report")
    demo.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    demo.add_argument("--seed", type=int, default=7, help="seed for the simulated services")
    demo.add_argument(
        "--users", type=_positive_int, default=50, help="concurrent users in the load test (>= 1)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    config = sub.add_parser("config", help="work with a configuration file")
    config.set_defaults(usage=config)
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    check = config_sub.add_parser("check", help="validate FILE and print the resolved config")
    check.add_argument("file", metavar="FILE")
    publish = config_sub.add_parser(
        "publish", help="validate FILE, then have every process of its [fleet] reload it"
    )
    publish.add_argument("file", metavar="FILE")
    withdraw = config_sub.add_parser(
        "withdraw",
        help="withdraw the configuration published for the fleet of FILE (processes keep it "
        "until they restart)",
    )
    withdraw.add_argument("--config", required=True, metavar="FILE")
    for act in (publish, withdraw):
        act.add_argument("--namespace", default="default", help="the infrastructure's namespace")
        act.add_argument("--reason", default="", help="why (shown in every process's health)")
        act.add_argument("--by", default="", help="who (default: user@host running this)")

    scen = sub.add_parser(
        "scenarios", help="run failure scenarios against a configuration and print what they did"
    )
    scen.add_argument(
        "names",
        nargs="*",
        metavar="SCENARIO",
        help="scenarios to run (default: all of circuit_breaker_chaos, memory_pressure, "
        "rate_limit_burst, connection_pool_exhaustion, gradual_degradation, scheduled_chaos)",
    )
    scen.add_argument("--config", metavar="FILE", help="the configuration (default: the demo's)")

    health = sub.add_parser(
        "health",
        help="connect a configuration's pools and shared backends, then print its health",
    )
    health.add_argument("--config", required=True, metavar="FILE")
    health.add_argument("--namespace", default="default", help="the namespace to look at")
    health.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how long each pool may take to lend a connection (default: 5)",
    )
    breaker = sub.add_parser(
        "breaker", help="an operator's action on a fleet breaker, in every process"
    )
    breaker.set_defaults(usage=breaker)
    breaker_sub = breaker.add_subparsers(dest="breaker_command", metavar="ACTION")
    for action, text in (
        ("force-open", "refuse every call of NAME in every process until a reset"),
        ("disable", "admit every call of NAME in every process until a reset"),
        ("reset", "clear the overrides of NAME and close it in every process"),
    ):
        act = breaker_sub.add_parser(action, help=text)
        act.add_argument("name", metavar="NAME", help="a breaker with fleet = true")
        act.add_argument("--config", required=True, metavar="FILE")
        act.add_argument("--namespace", default="default", help="the infrastructure's namespace")
        act.add_argument("--reason", default="", help="why (shown in every process's health)")
        act.add_argument("--by", default="", help="who (default: the user running this)")

    fleet = sub.add_parser("fleet", help="the fleet's shared breakers")
    fleet.set_defaults(usage=fleet)
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION")
    status = fleet_sub.add_parser(
        "status",
        help="every fleet breaker's state, overrides and the processes reporting, and the "
        "configuration published for the fleet",
    )
    status.add_argument("--config", required=True, metavar="FILE")
    status.add_argument("--namespace", default="default", help="the infrastructure's namespace")

    dash = sub.add_parser(
        "dashboard",
        help="serve the live operator dashboard of a configuration",
        description="Serve the live operator dashboard of FILE's infrastructure. Read-only "
        "unless an admin token is given, in the environment variable "
        "BUTTRESS_DASHBOARD_TOKEN or in a file (--token-file); never on the command line, "
        "where other users of the machine could read it.",
    )
    dash.add_argument("--config", required=True, metavar="FILE")
    dash.add_argument("--namespace", default="default", help="the infrastructure's namespace")
    dash.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: loopback only)"
    )
    dash.add_argument("--port", type=_port, default=8088, help="the port (default: 8088)")
    dash.add_argument(
        "--token-file", metavar="PATH", help="a file holding the admin token (enables actions)"
    )
    dash.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often the page is refreshed (default: 1)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "dashboard":  # a server: its log records go out as they come
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return _run(args)
    with _logs_after_results():
        return _run(args)


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _logs_after_results() -> Iterator[None]:
    """Hold the ``buttress`` logger's records while a command runs, then write them to stderr,
    after everything the command printed."""
    logger = logging.getLogger("buttress")
    held = _Held()
    logger.addHandler(held)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate
        if held.records:
            form = logging.Formatter("%(levelname)s %(name)s: %(message)s")
            count = len(held.records)
            plural = "s" if count > 1 else ""
            print(f"buttress: {count} log record{plural} during the command:", file=sys.stderr)
            for record in held.records:
                text = form.format(record).replace("\n", "\n    ")
                print(f"  {text}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            from ._demo import run_demo

            if args.json:
                _check_writable("--json", args.json)

            report = run_demo(
                seed=args.seed,
                json_path=args.json,
                users=args.users,
                progress=False if args.no_progress else None,
            )
            return 0 if all(report.checks.values()) else 1
        if args.command == "config" and args.config_command == "check":
            return _config_check(args.file)
        if args.command == "config" and args.config_command in ("publish", "withdraw"):
            return _config_publication(args)
        if args.command == "health":
            return _health(args.config, args.namespace, args.timeout)
        if args.command == "scenarios":
            return _scenarios(args.names, args.config)
        if args.command == "breaker" and args.breaker_command:
            return _breaker_action(args)
        if args.command == "fleet" and args.fleet_command == "status":
            return _fleet_status(args.config, args.namespace)
        if args.command == "dashboard":
            from ._dashboard._serve import serve, token_from

            token = token_from(args.token_file)
            return serve(
                args.config,
                namespace=args.namespace,
                host=args.host,
                port=args.port,
                token=token,
                interval=args.interval,
            )
    except ConfigError as exc:
        print(f"buttress: {exc}", file=sys.stderr)
        return 2
    except ButtressError as exc:  # a backend that cannot be made, ...
        print(f"buttress: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    args.usage.print_help()  # no command, or `config` without its action
    return 2


def _fleet_store(path: str, namespace: str) -> tuple[Any, Any, list[str]]:
    """The fleet's Redis client and store for a configuration, and its fleet breakers."""
    from ._config import load_config
    from ._fleet._redis import FleetStore

    cfg = load_config(path)
    names = [n for n, b in cfg.circuit_breakers.items() if b.fleet and n != "default"]
    if cfg.fleet.url is None:
        raise ConfigError("fleet.url", f"{path} has no [fleet] url: no breaker is shared")
    import redis

    client = redis.Redis.from_url(cfg.fleet.url, socket_timeout=5.0, socket_connect_timeout=5.0)
    return client, FleetStore(client, cfg.fleet.namespace or namespace), names


def _fleet_unreachable(exc: Exception) -> int:
    """Say that the fleet's Redis could not be reached (no password shown); the exit code."""
    print(f"buttress: could not reach the fleet's Redis: {redact_text(str(exc))}", file=sys.stderr)
    return 1


def _breaker_action(args: argparse.Namespace) -> int:
    import getpass

    client, store, names = _fleet_store(args.config, args.namespace)
    if args.name not in names:
        known = ", ".join(names) or "none"
        raise ConfigError(
            "NAME", f"{args.name!r} is no breaker with fleet = true in {args.config} ({known})"
        )
    action = args.breaker_command.replace("-", "_")
    by = args.by or getpass.getuser()
    try:
        generation, at_ms = store.override(args.name, action, args.reason, by)
    except Exception as exc:  # redis-py's errors: the server is down or refuses
        return _fleet_unreachable(exc)
    finally:
        client.close()
    print(
        json.dumps(
            {
                "breaker": args.name,
                "action": action,
                "reason": args.reason,
                "by": by,
                "generation": generation,
                "at": at_ms / 1000,
            },
            indent=2,
        )
    )
    return 0


def _fleet_status(path: str, namespace: str) -> int:
    from ._fleet._publication_store import PublicationStore

    client, store, names = _fleet_store(path, namespace)
    try:
        report = {
            "breakers": {name: store.read(client, name) for name in names},
            "published": PublicationStore(client, store.namespace).read(),
        }
    except Exception as exc:
        return _fleet_unreachable(exc)
    finally:
        client.close()
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def _positive_int(text: str) -> int:
    """An argparse type: refused at parsing, naming the option, before any work runs."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _check_writable(option: str, path: str) -> None:
    """Fail before the work, not after it, when the output cannot be written."""
    import os
    from pathlib import Path

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ConfigError(option, f"{path} is a directory")
    if not folder.is_dir():
        raise ConfigError(option, f"{path}: no such directory {str(folder)!r}")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(option, f"{path}: not writable")


def _config_check(path: str) -> int:
    from ._config import load_config

    cfg = load_config(path)
    cfg.check_imports()  # the exception classes and factories it names, as Infrastructure will
    print(json.dumps(redact_data(cfg.to_toml_dict()), indent=2, sort_keys=True))
    for name, pool in cfg.connection_pools.items():
        if pool.factory is None:  # code may give it one: a note, not a failure
            print(
                f"{path}: connection_pools.{name} has no factory: Infrastructure needs "
                f"pools={{{name!r}: create}} in code for it",
                file=sys.stderr,
            )
    print(f"{path}: ok", file=sys.stderr)
    return 0


def _config_publication(args: argparse.Namespace) -> int:
    """``config publish FILE``: validate FILE as every process will read it, then record its
    text for the fleet of its ``[fleet]``; ``config withdraw --config FILE``: withdraw it."""
    import getpass
    import socket
    import tomllib
    from pathlib import Path

    from ._config import load_config
    from ._fleet._publication_store import PublicationStore

    path = args.file if args.config_command == "publish" else args.config
    document = ""
    if args.config_command == "publish":
        try:
            document = Path(path).read_text(encoding="utf-8")
            data = tomllib.loads(document)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, f"cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, f"is not valid TOML: {exc}") from None
        # The document alone: each process applies its own BUTTRESS_... variables over it.
        load_config(data, env={}).check_imports()
    cfg = load_config(path)  # where the fleet is, found as `breaker force-open` finds it
    if cfg.fleet.url is None:
        raise ConfigError("fleet.url", f"{path} has no [fleet] url: there is no fleet to reach")
    namespace = cfg.fleet.namespace or args.namespace
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    import redis

    client = redis.Redis.from_url(cfg.fleet.url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        store = PublicationStore(client, namespace)
        if args.config_command == "publish":
            generation, at_ms = store.publish(document, by, args.reason)
        else:
            generation, at_ms = store.withdraw(by, args.reason)
    except Exception as exc:  # redis-py's errors: the server is down or refuses
        return _fleet_unreachable(exc)
    finally:
        client.close()
    if generation == 0:
        print(f"buttress: nothing is published for the fleet {namespace!r}", file=sys.stderr)
        return 1
    record = {
        "namespace": namespace,
        "action": args.config_command,
        "generation": generation,
        "by": by,
        "reason": args.reason,
        "at": at_ms / 1000,
    }
    if document:
        record["file"] = path
    print(json.dumps(record, indent=2))
    return 0


def _health(path: str, namespace: str, timeout: float) -> int:
    from ._infrastructure import Infrastructure

    infra = Infrastructure(namespace, path)
    doc, unhealthy = asyncio.run(_reach_all(infra, timeout))
    print(json.dumps(redact_data(doc), indent=2, default=str))
    return 1 if unhealthy else 0


async def _reach_all(infra: Infrastructure, timeout: float) -> tuple[dict[str, Any], bool]:
    """Start ``infra``, ask every pool for a connection and every limiter's backend for an
    answer (at once, each within ``timeout``), then judge: a pool that lends nothing fails,
    with what its last connect said."""
    async with infra:  # the async pools too
        failed = await asyncio.gather(
            *(asyncio.to_thread(_reach_pool, n, p, timeout) for n, p in infra.pools.items()),
            *(_reach_async_pool(n, p, timeout) for n, p in infra.async_pools.items()),
        )
        backends = dict(
            zip(
                infra.limiters,
                await asyncio.gather(
                    *(asyncio.to_thread(_reach_backend, lim) for lim in infra.limiters.values())
                ),
                strict=True,
            )
        )
        report = infra.health().with_checks(c for c in failed if c is not None)
    doc = report.to_health_json(verbose=True)  # for the operator: what each driver said
    doc["rate_limit_backends"] = backends
    return doc, report.overall_status == "unhealthy"


def _reach_pool(name: str, pool: ConnectionPool, timeout: float) -> ComponentCheck | None:
    try:
        with pool.connection(timeout=timeout):
            return None
    except Exception as exc:
        return _unreachable(name, exc, timeout)


async def _reach_async_pool(
    name: str, pool: AsyncConnectionPool, timeout: float
) -> ComponentCheck | None:
    try:
        async with pool.connection(timeout=timeout):
            return None
    except Exception as exc:
        return _unreachable(name, exc, timeout)


def _unreachable(name: str, exc: Exception, timeout: float) -> ComponentCheck:
    from ._health import ComponentCheck, error_type

    cause = exc.connect_error if isinstance(exc, PoolTimeoutError) else exc
    if cause is None:  # no connect finished within the timeout: it hangs
        why, detail = "connecting did not finish", None
    else:
        detail = redact_text(repr(cause))
        why = f"last: {error_type(detail)}"
    return ComponentCheck(
        "connection_pool",
        name,
        "fail",
        "unreachable",
        f"no connection within {timeout:g}s; {why}",
        detail,
    )


def _reach_backend(limiter: RateLimiter) -> dict[str, Any]:
    status = limiter.check_backend()
    keys = None
    if status == "ok":
        with contextlib.suppress(ButtressError):
            keys = limiter.backend.key_count()
    return {
        "backend": repr(limiter.backend),
        "status": status,
        "backend_keys": keys,
        "error": limiter.snapshot().backend_error,  # None while it answers
    }


def _scenarios(names: list[str], path: str | None) -> int:
    import tempfile
    from pathlib import Path

    from ._demo import demo_config
    from .testing import SCENARIOS, isolated_infrastructure, simulate_failures

    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ConfigError(
            "scenarios", f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})"
        )
    with tempfile.TemporaryDirectory(prefix="buttress-scenarios-") as tmp:
        config = path if path is not None else demo_config(Path(tmp))
        with isolated_infrastructure(config, prefix="scenarios") as infra:
            results = simulate_failures(infra, names or SCENARIOS)
            status = infra.health().overall_status
    for r in results:  # a summary may quote an error raised by the configuration's factory
        print(f"[{'x' if r.ok else ' '}] {r.name}: {redact_text(r.summary)}")
    print(f"health afterwards: {status}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
