"""The ``verdict`` command line: one module per command group, sharing ``common``.

A new command is one module with an ``add_<name>_command(commands)`` that registers its parser
and sets ``func``; the function returns the exit code (``common.EXIT_*``) or raises
``common.CommandError``, which ``main`` turns into ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from verdict import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # Imported here: the commands bring grpc, Cedar and Redis, ~0.8 s that `--version` and
    # `healthcheck` skip.
    from verdict.cli.audit import add_audit_command
    from verdict.cli.authoring import add_authoring_commands
    from verdict.cli.check import add_check_command
    from verdict.cli.entities import add_entities_command
    from verdict.cli.healthcheck import add_healthcheck_command
    from verdict.cli.serve import add_serve_command
    from verdict.cli.test import add_test_command
    from verdict.cli.validate import add_validate_command
    from verdict.cli.version import add_version_command

    parser, commands = _top_level()
    add_serve_command(commands)
    add_check_command(commands)
    add_validate_command(commands)
    add_test_command(commands)
    add_entities_command(commands)
    add_authoring_commands(commands)
    add_version_command(commands)
    add_audit_command(commands)
    add_healthcheck_command(commands)
    return parser


def _top_level() -> tuple[argparse.ArgumentParser, Any]:
    """The ``verdict`` parser without its commands, and the set they are added to."""
    from verdict.cli.common import VerdictParser, add_commands

    parser = VerdictParser(
        prog="verdict", description="Verdict: a Cedar policy decision point served over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"verdict {__version__}")
    return parser, add_commands(parser, "command", "COMMAND")


def healthcheck_parser() -> argparse.ArgumentParser:
    """The parser of ``verdict healthcheck`` alone: a container runs it every few seconds, so
    it imports grpc and nothing of the server (~0.25 s of CPU instead of ~0.8 s)."""
    from verdict.cli.healthcheck import add_healthcheck_command

    parser, commands = _top_level()
    add_healthcheck_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``verdict`` command."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["--version"]:  # answered before any command is imported
        print(f"verdict {__version__}")
        return 0
    from verdict.cli.common import run

    if arguments[:1] == ["healthcheck"]:
        return run(healthcheck_parser().parse_args(arguments))
    return run(build_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
