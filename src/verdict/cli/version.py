"""``verdict version``: each policy store's content version (the program's: ``--version``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_OK, fail


def _version(args: argparse.Namespace) -> int:
    from verdict.errors import PolicyLoadError
    from verdict.policy.loader import store_roots, store_version

    try:
        versions = [f"{root.name} {store_version(root)}" for root in store_roots(args.stores)]
    except PolicyLoadError as exc:  # `error: FILE:0: ...`, as every command says it
        fail(str(exc))
    for line in versions:
        print(line)
    return EXIT_OK


def add_version_command(commands: Any) -> None:
    """Register ``verdict version``."""
    version = commands.add_parser(
        "version",
        help=summary("version"),
        description="Print each policy store's content hash: the policy_version the server "
        "reports for decisions made with these files.",
    )
    version.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    version.set_defaults(func=_version)
