"""The ``agentsync`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentsync import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentsync",
        description="Serverless state sharing for AI and edge agents.",
    )
    parser.add_argument("--version", action="version", version=f"agentsync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="two agents diverge offline and converge by exchanging deltas",
        description="Two agents diverge offline and converge by exchanging deltas.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for errors, never a traceback)."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from agentsync.demo import run

        return 0 if run() else 1
    return 2  # pragma: no cover  # argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
