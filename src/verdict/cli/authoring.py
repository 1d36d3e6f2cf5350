"""The authoring subcommands: `verdict fmt` and `verdict diff`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_FAILED as EXIT_FOUND
from verdict.cli.common import EXIT_OK, unusable

if TYPE_CHECKING:  # imported where used: not for --help
    from verdict.authoring.diff import StoreDiff


def add_authoring_commands(commands: Any) -> None:
    """Register fmt and diff on the CLI's subcommand set."""
    fmt = commands.add_parser(
        "fmt",
        help=summary("fmt"),
        description="Rewrite every *.cedar file of every store in Cedar's formatting (comments "
        "and annotations kept). With --check, change nothing: list the files that are not "
        "formatted and exit 1 (for CI). Exit 2 when a file cannot be parsed.",
    )
    fmt.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    fmt.add_argument("--check", action="store_true", help="only list unformatted files")
    fmt.set_defaults(func=_fmt)

    diff = commands.add_parser(
        "diff",
        help=summary("diff"),
        description="Per store: policies added, removed and changed (by id; moving or "
        "reformatting is no change), and the cases of the --against tree's test suites whose "
        "decision flips between the two trees (same entity data). Exit 0, or with "
        "--exit-code 1 when a decision flips; 2 when a tree cannot be loaded.",
    )
    diff.add_argument("--stores", type=Path, required=True, help="the old policy stores")
    diff.add_argument("--against", type=Path, required=True, help="the new policy stores")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when a decision flips")
    diff.set_defaults(func=_diff)


def _fmt(args: argparse.Namespace) -> int:
    from verdict.authoring.fmt import format_stores
    from verdict.errors import PolicyLoadError

    try:
        result = format_stores(args.stores, write=not args.check)
    except PolicyLoadError as exc:
        unusable(exc.diagnostics, "nothing was formatted")
    verb = "not formatted" if args.check else "formatted"
    for path in result.unformatted:
        print(f"{path}: {verb}")
    if result.problems:
        unusable(result.problems, f"{len(result.problems)} file(s) could not be formatted")
    return EXIT_FOUND if args.check and result.unformatted else EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    from verdict.authoring.diff import diff_stores
    from verdict.errors import PolicyLoadError
    from verdict.policy.loader import load_policy_stores
    from verdict.policytest.loader import SuiteLoadError

    try:
        old = load_policy_stores(args.stores)
        new = load_policy_stores(args.against)
        diffs = diff_stores(old, new, args.against)
    except (PolicyLoadError, SuiteLoadError) as exc:
        unusable(exc.diagnostics, "nothing was compared")
    for store in diffs:
        for line in diff_lines(store):
            print(line)
    flipped = any(d.flips for d in diffs)
    return EXIT_FOUND if args.exit_code and flipped else EXIT_OK


def diff_lines(store: StoreDiff) -> list[str]:
    """The report of one store's differences."""
    from verdict.policytest.report import describe_outcome

    if store.old is None:
        return [f"{store.store_id}: added"]
    if store.new is None:
        return [f"{store.store_id}: removed"]
    if not store.differs:
        return [f"{store.store_id}: unchanged ({store.new.version})"]
    lines = [f"{store.store_id}: {store.old.version} -> {store.new.version}"]
    lines += [f"  + {p.id} ({p.location})" for p in store.added]
    lines += [f"  - {p.id} ({p.location})" for p in store.removed]
    lines += [f"  ~ {p.id} ({p.location})" for p in store.changed]
    lines.append(f"  decisions that flip: {len(store.flips)} of {store.cases} cases")
    lines += [
        f"    {f.title}: {describe_outcome(f.old)} -> {describe_outcome(f.new)}"
        for f in store.flips
    ]
    return lines
