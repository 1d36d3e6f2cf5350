"""``verdict entities load|export`` (files and Redis) and ``put|delete|get`` (a running server)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.common import add_commands, positive_float, positive_int
from verdict.cli.entities_remote import add_remote_actions

# Bounds of the numeric flags: above them a value is a typo, and it would only hold one
# pipeline (or one wait) for hours; below them the loop would spin on its own progress lines.
MAX_CHUNK = 100_000
MAX_SECONDS = 86_400.0
MIN_PROGRESS_SECONDS = 0.001
MIN_TIMEOUT_SECONDS = 0.001


def _run(args: argparse.Namespace) -> int:
    from verdict.cli.entities_redis import run  # Redis and Cedar: not for --help

    return run(args)


def add_entities_command(commands: Any) -> None:
    """Register ``verdict entities`` and its subcommands."""
    entities = commands.add_parser(
        "entities",
        help=summary("entities"),
        description="Move Cedar JSON entities between policy stores' entities.json files and "
        "Redis (load, export), or write and read them through a running server's EntityService "
        "(put, delete, get).",
    )
    actions = add_commands(entities, "entities_command", "ACTION")
    load = actions.add_parser(
        "load",
        help="load entities.json of every store (or one)",
        description="Validate each store's entities.json against its schema and make it the "
        "store's entities in Redis: staged in pipelined chunks, then switched to in one atomic "
        "step (entities not in the file are removed). A store without entities.json is only "
        "marked loaded. A file of 2 MiB or more is parsed by two processes, this one and a "
        "forked child (docs/redis.md, Writes). Progress, per phase: read, parse (entities "
        "parsed, share of the file read), validate (Cedar checks each part on threads of its "
        "own as the parse hands it on: it starts with the parse and ends before the switch, "
        "which waits for it), write (staged, then the switch).",
    )
    load.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    load.add_argument("--store", help="load only this store")
    load.add_argument(
        "--chunk",
        type=positive_int("--chunk", MAX_CHUNK),
        default=1000,
        help=f"entities per atomic write (at most {MAX_CHUNK:,})",
    )
    load.add_argument(
        "--progress-seconds",
        type=positive_float("--progress-seconds", MIN_PROGRESS_SECONDS, MAX_SECONDS),
        default=2.0,
        metavar="SECONDS",
        help="when stderr is not a terminal, a progress line per phase at most this often",
    )
    export = actions.add_parser(
        "export",
        help="write a store's entities as Cedar JSON",
        description="Read every entity of one store from Redis and "
        "write a Cedar JSON array (sorted by uid).",
    )
    export.add_argument("--store", required=True, help="policy store id")
    # Kept as given (a Path drops a trailing /, which says the user meant a folder).
    export.add_argument("--out", help="file to write (default: stdout)")
    for sub in (load, export):
        sub.add_argument("--redis-url", required=True, help="redis://, rediss:// or unix://")
        sub.add_argument("--redis-cluster", action="store_true", help="URL names a cluster node")
        sub.add_argument(
            "--timeout",
            type=positive_float("--timeout", MIN_TIMEOUT_SECONDS, MAX_SECONDS),
            default=5.0,
            help="seconds per Redis call",
        )
        sub.add_argument(
            "--redis-namespace",
            # None: Settings reads VERDICT_REDIS_NAMESPACE, as serve does; a default here
            # hid it, and a load wrote where its server never reads.
            help="key and channel prefix of the deployment "
            "(VERDICT_REDIS_NAMESPACE; default: verdict)",
        )
    entities.set_defaults(func=_run)
    add_remote_actions(actions)
