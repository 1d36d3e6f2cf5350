"""`verdict audit verify|replay`: check an audit log's chain, replay it against new policies."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_FAILED as EXIT_FOUND
from verdict.cli.common import EXIT_OK, check_redis_url, fail, redact_url, unusable

if TYPE_CHECKING:  # imported where used: not for --help
    from verdict.audit.keys import AuditKey
    from verdict.authoring.replay import ReplayReport


def add_audit_command(commands: Any) -> None:
    """Register ``verdict audit verify`` and ``verdict audit replay``."""
    audit = commands.add_parser(
        "audit", help=summary("audit"),
        description="Check the hash chain of audit records, or re-evaluate recorded decisions "
        "against candidate policies.",
    )  # fmt: skip
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify",
        help="report removed, reordered or altered records",
        description="Verify the hash chain of audit JSONL files (each rotated file is its own "
        "segment) or of a Redis stream. Exit 0 intact, 1 broken (positions printed), 2 unreadable.",
    )
    check.add_argument("files", nargs="*", type=Path, help="audit JSONL files")
    check.add_argument("--redis-url", help="read the stream from this Redis instead")
    check.add_argument("--stream", default="verdict:audit", help="Redis stream key")
    check.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the server's --audit-key-file: also check every record's signature (without "
        "it, records appended by someone who can write the log go unnoticed)",
    )
    check.set_defaults(func=_verify)
    again = actions.add_parser(
        "replay",
        help="decisions that candidate policies would answer differently",
        description="Re-evaluate the decisions recorded in FILE against the policy stores in "
        "--stores (with their entities.json), and list those that would change, grouped by "
        "policy. Exit 0 none change, 1 some change, 2 unusable input.",
    )
    again.add_argument("file", type=Path, help="an audit JSONL file")
    again.add_argument("--stores", type=Path, required=True, help="candidate policy stores")
    again.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the server's --audit-key-file: records that signed marks say were never "
        "acknowledged are skipped (without it, every record is replayed)",
    )
    again.set_defaults(func=_replay)


def _verify(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from verdict.audit.chain import record_lines
    from verdict.audit.verify import verify_sources
    from verdict.store.redis_failures import connect_failure

    key = _key(args.key_file)
    if args.redis_url:
        check_redis_url("--redis-url", args.redis_url)
        shown = redact_url(args.redis_url)  # named in every line printed: without its password
        try:
            sources = {f"{shown} {args.stream}": asyncio.run(_stream_lines(args))}
        except (RedisError, OSError) as exc:  # exit 2, unreadable: not 1, which says "broken"
            reason = connect_failure(exc)
            if reason is not None:
                fail(f"cannot connect to Redis at {shown}: {reason}")
            fail(f"cannot read the stream {args.stream}: {type(exc).__name__}")
    elif args.files:
        try:
            sources = {str(f): record_lines(f.read_text(encoding="utf-8")) for f in args.files}
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read: {exc}")
    else:
        fail("name audit files or --redis-url")
    broken = False
    checked = verify_sources(sources, key)
    marks = checked.unacknowledged()
    for name, lines in sources.items():
        count, breaks = checked.counts[name], checked.breaks[name]
        for found in breaks:
            print(f"{name}:{found.position}: segment {found.segment}: {found.problem}")
        state = "intact" if not breaks else f"{len(breaks)} breaks"
        print(f"{name}: {count} records, {state}{', signed' if key and not breaks else ''}")
        if unanswered := marks.count(lines):
            print(f"{name}: {unanswered} records written but never acknowledged (a write that "
                  "failed late: their decisions were refused or recorded again; replay skips "
                  "them)")  # fmt: skip
        broken = broken or bool(breaks)
    return EXIT_FOUND if broken else EXIT_OK


async def _stream_lines(args: argparse.Namespace) -> list[str]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(args.redis_url)
    try:
        entries = await client.xrange(args.stream)
    finally:
        await client.aclose()
    lines: list[str] = []
    for _, fields in entries or []:
        raw: Any = fields.get(b"r") if fields else None
        if isinstance(raw, bytes):
            lines.append(raw.decode("utf-8"))
    return lines


def _replay(args: argparse.Namespace) -> int:
    from verdict.app import entity_files
    from verdict.audit.chain import record_lines
    from verdict.authoring.replay import replay
    from verdict.engine.authorizer import Authorizer
    from verdict.errors import PolicyLoadError
    from verdict.policy.holder import PolicyHolder
    from verdict.policy.loader import load_policy_stores
    from verdict.store.memory import MemoryEntityStore

    try:
        snapshot = load_policy_stores(args.stores)
        entities = MemoryEntityStore.from_files(entity_files(snapshot))
        lines = record_lines(args.file.read_text(encoding="utf-8"))
    except PolicyLoadError as exc:
        unusable(exc.diagnostics, "nothing was replayed")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {args.file}: {exc}")
    authorizer = Authorizer(PolicyHolder(snapshot), entities)
    report = asyncio.run(replay(lines, authorizer, _key(args.key_file)))
    for line in report_lines(report):
        print(line)
    return EXIT_FOUND if report.changes else EXIT_OK


def _key(path: Path | None) -> AuditKey | None:
    """The key of ``--key-file`` (exit 2 when it cannot be used), or None."""
    from verdict.audit.keys import AuditKeyError, read_audit_key

    if path is None:
        return None
    try:
        return read_audit_key(path)
    except AuditKeyError as exc:
        fail(f"--key-file {path}: {exc}")


def report_lines(report: ReplayReport) -> Iterator[str]:
    """The replay report: changes grouped by policy, then the counts."""
    for policies, changes in report.by_policy().items():
        yield f"{policies}: {len(changes)} decision(s) change"
        for change in changes:
            record = change.record
            who = _uid(record["principal"])
            what = f"{_uid(record['action'])} on {_uid(record['resource'])}"
            yield (f"  line {change.position}: {who} {what}: {record['decision']} -> {change.now}"
                   f" (request {record.get('request_id', '?')})")  # fmt: skip
    for reason, count in sorted(report.not_replayable.items()):
        yield f"not replayed ({reason}): {count}"
    yield f"{report.replayed} replayed, {len(report.changes)} would change"


def _uid(value: dict[str, str]) -> str:
    return f'{value.get("type")}::"{value.get("id")}"'
