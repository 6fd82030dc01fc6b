"""The ``buttress`` command (also ``python -m buttress``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="buttress", description="buttress: the infrastructure layer for Python services."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="watch a circuit breaker walk through every state")
    demo.add_argument("--seed", type=int, default=7, help="seed for the simulated upstream")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from ._demo import run_breaker_demo

        return 0 if run_breaker_demo(seed=args.seed) else 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
