"""``verdict entities put|delete|get``: write and read entities through a running server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from verdict.cedar_json import loads_strict
from verdict.cli.common import EXIT_FAILED, EXIT_OK, fail
from verdict.cli.server_flags import add_server_flags
from verdict.errors import RequestError
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

STDIN = "-"


def _read_json(source: str) -> Any:
    """The JSON value in file ``source`` (``-``: standard input), or a message with the place."""
    shown = "standard input" if source == STDIN else source
    try:
        text = sys.stdin.read() if source == STDIN else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {shown}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}")
    try:
        # As strict as the server: json.loads kept the last of repeated keys, so a file with
        # "suspended": true, ... "suspended": false was written as not suspended, and a uid
        # {"id": "alice", "id": "bob"} read or deleted bob (attack round 20).
        return loads_strict(text, shown)
    except RequestError as strict:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            fail(f"{shown}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}")
        fail(str(strict))


def _entities(sources: list[str]) -> list[Any]:
    """Every entity of every file, in order: each file holds a Cedar JSON array."""
    entities: list[Any] = []
    for source in sources:
        value = _read_json(source)
        if not isinstance(value, list):
            shown = "standard input" if source == STDIN else source
            fail(f"{shown}: must be a JSON array of Cedar entities")
        entities += value
    return entities


def _uid(value: Any, where: str) -> EntityUid:
    if isinstance(value, str):
        try:
            return parse_uid_arg(value, where)
        except RequestError as exc:
            fail(str(exc))
    plain = isinstance(value, dict) and set(value) == {"type", "id"}
    if not (plain and isinstance(value["type"], str) and isinstance(value["id"], str)):
        fail(f'{where}: must be TYPE::"ID", TYPE::ID or {{"type": ..., "id": ...}}')
    return EntityUid(value["type"], value["id"])


def _uids(args: argparse.Namespace) -> list[EntityUid]:
    """The uids named as arguments, then those of the --from file."""
    uids = [_uid(text, f"uid {text!r}") for text in args.uids]
    if args.from_file is not None:
        value = _read_json(args.from_file)
        if not isinstance(value, list):
            fail(f"{args.from_file}: must be a JSON array of uids")
        uids += [_uid(item, f"{args.from_file}[{i}]") for i, item in enumerate(value)]
    if not uids:
        fail("name at least one uid (TYPE::ID arguments, or --from FILE)")
    return uids


def _entities_noun(count: int) -> str:
    return "entity" if count == 1 else "entities"


def _put(args: argparse.Namespace) -> int:
    from verdict.cli.remote import ask  # grpc: not for --help

    entities = _entities(args.files)
    write = ask(args, lambda client: client.put_entities(entities, store=args.store or ""))
    print(f"{write.count} {_entities_noun(write.count)} written; entity version {write.version}")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from verdict.cli.remote import ask  # grpc: not for --help

    uids = _uids(args)
    write = ask(args, lambda client: client.delete_entities(uids, store=args.store or ""))
    counted = f"{write.count} of {len(uids)} {_entities_noun(len(uids))}"
    print(f"{counted} deleted; entity version {write.version}")
    return EXIT_OK


def _get(args: argparse.Namespace) -> int:
    from verdict.cli.remote import ask  # grpc: not for --help

    uids = _uids(args)
    read = ask(args, lambda client: client.get_entities(uids, store=args.store or ""))
    sys.stdout.write(json.dumps(read.entities, indent=2, ensure_ascii=False) + "\n")
    for uid in read.missing:
        print(f"not found: {uid}", file=sys.stderr)
    print(f"entity version {read.version}", file=sys.stderr)
    return EXIT_FAILED if read.missing else EXIT_OK


def add_remote_actions(actions: Any) -> None:
    """Register ``put``, ``delete`` and ``get`` under ``verdict entities``."""
    put = actions.add_parser(
        "put",
        help="create or replace entities on a running server",
        description="Send Cedar JSON entities (each FILE a JSON array; - reads standard input) "
        "to a server's PutEntities: all or nothing. Prints the new entity version, which "
        "`verdict check --server --min-version` can wait for. Exit 0 written, 2 refused.",
    )
    put.add_argument("files", nargs="+", metavar="FILE", help="Cedar JSON array, or - for stdin")
    put.set_defaults(func=_put)
    delete = actions.add_parser(
        "delete",
        help="delete entities on a running server",
        description="Delete entities by uid through a server's DeleteEntities; prints how many "
        "existed and the new entity version. Exit 0 done, 2 refused.",
    )
    get = actions.add_parser(
        "get",
        help="print entities as a running server stores them",
        description="Read entities by uid through a server's GetEntities and print them as a "
        "Cedar JSON array; uids not found go to stderr. Exit 0 all found, 1 some not found, "
        "2 refused.",
    )
    delete.set_defaults(func=_delete)
    get.set_defaults(func=_get)
    for sub in (delete, get):
        sub.add_argument(
            "uids", nargs="*", metavar="UID", help='TYPE::"ID" or TYPE::ID (split at the last ::)'
        )
        sub.add_argument(
            "--from",
            dest="from_file",
            metavar="FILE",
            help="a JSON array of uids (strings as above, or {type, id}); - reads stdin",
        )
    for sub in (put, delete, get):
        sub.add_argument("--store", help="policy store id (default: the server's default store)")
        add_server_flags(sub, required=True)
