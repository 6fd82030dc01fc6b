"""The ``buttress`` command (also ``python -m buttress``).

buttress --version
buttress demo [--json PATH] [--seed N] [--users N]
buttress config check FILE
buttress health --config FILE [--namespace NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence

from . import __version__
from ._errors import ButtressError, ConfigError


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

    scen = sub.add_parser(
        "scenarios", help="run failure scenarios against a configuration and print what they did"
    )
    scen.add_argument(
        "names",
        nargs="*",
        metavar="SCENARIO",
        help="scenarios to run (default: all of circuit_breaker_chaos, memory_pressure, "
        "rate_limit_burst, connection_pool_exhaustion, gradual_degradation)",
    )
    scen.add_argument("--config", metavar="FILE", help="the configuration (default: the demo's)")

    health = sub.add_parser(
        "health", help="print the health of a configuration (e.g. its Redis-backed limiters)"
    )
    health.add_argument("--config", required=True, metavar="FILE")
    health.add_argument("--namespace", default="default", help="the namespace to look at")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
        if args.command == "health":
            return _health(args.config, args.namespace)
        if args.command == "scenarios":
            return _scenarios(args.names, args.config)
    except ConfigError as exc:
        print(f"buttress: {exc}", file=sys.stderr)
        return 2
    args.usage.print_help()  # no command, or `config` without its action
    return 2


def _positive_int(text: str) -> int:
    """An argparse type: refused at parsing, naming the option, before any work runs."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
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
    print(json.dumps(cfg.to_toml_dict(), indent=2, sort_keys=True))
    print(f"{path}: ok", file=sys.stderr)
    return 0


def _health(path: str, namespace: str) -> int:
    from ._infrastructure import Infrastructure

    with Infrastructure(namespace, path, background=False) as infra:
        # Reach every shared backend once, so the report says whether it answers.
        backends = {}
        for name, limiter in infra.limiters.items():
            status = limiter.check_backend()
            keys = None
            if status == "ok":
                with contextlib.suppress(ButtressError):
                    keys = limiter.backend.key_count()
            backends[name] = {
                "backend": repr(limiter.backend),
                "status": status,
                "backend_keys": keys,
            }
        report = infra.health()
    doc = report.to_health_json()
    doc["rate_limit_backends"] = backends
    print(json.dumps(doc, indent=2, default=str))
    return 0 if report.overall_status != "unhealthy" else 1


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
    for r in results:
        print(f"[{'x' if r.ok else ' '}] {r.name}: {r.summary}")
    print(f"health afterwards: {status}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
