"""The ``verdict`` command line: one module per command group, sharing ``common``.

A new command is one module with an ``add_<name>_command(commands)`` that registers its parser
and sets ``func``; the function returns the exit code (``common.EXIT_*``) or raises
``common.CommandError``, which ``main`` turns into ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from verdict import __version__
from verdict.cli.audit import add_audit_command
from verdict.cli.authoring import add_authoring_commands
from verdict.cli.check import add_check_command
from verdict.cli.common import VerdictParser, add_commands, run
from verdict.cli.entities import add_entities_command
from verdict.cli.healthcheck import add_healthcheck_command
from verdict.cli.serve import add_serve_command
from verdict.cli.test import add_test_command
from verdict.cli.validate import add_validate_command
from verdict.cli.version import add_version_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = VerdictParser(
        prog="verdict", description="Verdict: a Cedar policy decision point served over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"verdict {__version__}")
    commands = add_commands(parser, "command", "COMMAND")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``verdict`` command."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
