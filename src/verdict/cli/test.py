"""The ``verdict test`` subcommand's flags (``test_run`` loads the suites and runs them)."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.server_flags import add_server_flags


def add_test_command(commands: Any) -> None:
    """Register ``verdict test`` on the CLI's subcommand set."""
    test = commands.add_parser(
        "test",
        help=summary("test"),
        description="Run YAML/JSON policy test suites through the decision engine, or with "
        "--server through a running server's BatchAuthorize (its policies and entities; "
        "--stores still names the suites' stores). Exit 0 when every case passes, 1 when a "
        "case fails or coverage is below --min-coverage, 2 when a suite or store cannot be "
        "loaded or the server cannot be asked.",
    )
    test.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="suite files or folders (default: every store's tests/ folder)",
    )
    # Required, as usage shows and docs/policy-tests.md says: the suites name stores of it.
    test.add_argument(
        "--stores", type=Path, required=True, metavar="DIR", help="folder of policy stores"
    )
    test.add_argument("--store", help="store for suites that name none (default: the only one)")
    test.add_argument(
        "--filter",
        metavar="PATTERN",
        help="run only cases whose 'suite / case' title matches this regex",
    )
    # Kept as given (a Path drops a trailing /, which says the user meant a folder).
    test.add_argument("--junit", metavar="FILE", help="write JUnit XML to FILE")
    test.add_argument("--coverage", action="store_true", help="print per-policy coverage")
    test.add_argument(
        "--min-coverage",
        type=_percent,
        metavar="PERCENT",
        help="fail when a store's policy coverage is below PERCENT",
    )
    test.add_argument(
        "--per-request",
        action="store_true",
        help="evaluate each case alone through the server's Authorizer (slower; "
        "results are identical)",
    )
    test.add_argument(
        "-v", "--verbose", action="store_true", help="print every case, and Cedar's full error text"
    )
    test.add_argument(
        "--print-schema",
        action=_PrintSchema,
        help="print the JSON Schema of suite files and exit",
    )
    add_server_flags(test, required=False)
    test.set_defaults(func=_run)


class _PrintSchema(argparse.Action):
    """--print-schema answers when parsed, as --help does: it needs no --stores."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        import json

        from verdict.policytest.model import suite_json_schema

        print(json.dumps(suite_json_schema(), indent=2))
        parser.exit()


def _run(args: argparse.Namespace) -> int:
    from verdict.cli.test_run import run_test_command  # the engine: not for --help

    return run_test_command(args)


def _percent(text: str) -> Fraction:
    from verdict.policytest.coverage import parse_percent

    try:
        return parse_percent(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
