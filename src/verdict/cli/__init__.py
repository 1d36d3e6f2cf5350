"""The ``verdict`` command line: one module per command group, sharing ``common``.

A new command is one module with an ``add_<name>_command(commands)`` that registers its parser
and sets ``func``, and a row in ``commands.COMMANDS``; the function returns the exit code
(``common.EXIT_*``) or raises ``common.CommandError``, which ``main`` turns into
``error: ...`` and exit 2. ``verdict X ...`` imports X's module alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from verdict import __version__
from verdict.cli.commands import COMMANDS, Command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (imports every command's module)."""
    parser, commands = _top_level()
    registered: set[tuple[str, str]] = set()
    for command in COMMANDS.values():
        if (command.module, command.register) not in registered:
            registered.add((command.module, command.register))
            _registrar(command)(commands)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` alone: only its module is imported (`healthcheck`, run
    by a container every few seconds, loads grpc and nothing of the server; `check --help`
    no Redis client)."""
    parser, commands = _top_level()
    _registrar(COMMANDS[name])(commands)
    return parser


def listing_parser() -> argparse.ArgumentParser:
    """The ``verdict`` parser for ``--help``, no command or an unknown one: the commands and
    their summaries, from the table, with no command module imported."""
    parser, commands = _top_level()
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def _registrar(command: Command) -> Callable[[Any], None]:
    module = importlib.import_module(f"verdict.cli.{command.module}")
    register: Callable[[Any], None] = getattr(module, command.register)
    return register


def _top_level() -> tuple[argparse.ArgumentParser, Any]:
    """The ``verdict`` parser without its commands, and the set they are added to."""
    from verdict.cli.common import VerdictParser, add_commands

    parser = VerdictParser(
        prog="verdict", description="Verdict: a Cedar policy decision point served over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"verdict {__version__}")
    return parser, add_commands(parser, "command", "COMMAND")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``verdict`` command."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["--version"]:  # answered before any command is imported
        print(f"verdict {__version__}")
        return 0
    from verdict.cli.common import run

    if arguments and arguments[0] in COMMANDS:
        return run(command_parser(arguments[0]).parse_args(arguments))
    # Nothing to run: help, a usage error or an unknown command (with the nearest one).
    return run(listing_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
