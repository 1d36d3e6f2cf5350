"""``verdict check``: one decision, from the policy files or from a running server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, choose_store, fail, load_settings
from verdict.cli.server_flags import add_server_flags
from verdict.model import shown_text

# min_entity_version is a uint64 on the wire (proto/verdict/v1/authorization.proto).
MAX_ENTITY_VERSION = 2**64 - 1

if TYPE_CHECKING:  # the engine is imported when a decision is asked for, not for --help
    from verdict.model import AuthorizationResult
    from verdict.policy.snapshot import PolicyInfo


def _check(args: argparse.Namespace) -> int:
    from verdict.telemetry.logging import configure_logging

    configure_logging("error", "console")
    if args.server is not None:
        return _check_remote(args)
    if args.stores is None:
        fail("give --stores (the policy files) or --server (a running server)")
    if args.min_version is not None:
        fail("--min-version goes with --server")
    from verdict.app import build_app
    from verdict.cedar_json import parse_context_json, parse_entities_json
    from verdict.errors import VerdictError
    from verdict.model import AuthorizationRequest
    from verdict.uid_arg import parse_uid_arg

    settings = load_settings({"stores": args.stores}, {"stores": "--stores"})
    try:
        app = build_app(settings.model_copy(update={"default_store": None}))
        choose_store(app.policies.current.stores, args.store)
        request = AuthorizationRequest(
            principal=parse_uid_arg(args.principal, "--principal"),
            action=parse_uid_arg(args.action, "--action"),
            resource=parse_uid_arg(args.resource, "--resource"),
            context=parse_context_json(args.context or ""),
            store_id=args.store or "",
            extra_entities=parse_entities_json(args.entities or "", "--entities"),
        )
        result = asyncio.run(app.authorizer.authorize(request))
    except VerdictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_result(result, app.policies.current.resolve(result.store_id).policies)
    return EXIT_OK if result.allowed else EXIT_FAILED


def _print_result(result: AuthorizationResult, policies: Mapping[str, PolicyInfo]) -> None:
    kind = f" ({result.deny_kind.value})" if result.deny_kind is not None else ""
    print(f"decision: {result.decision.value.upper()}{kind}")
    if result.denied_for_errors:
        print(
            "determining policies: none (a permit matched, but evaluation errors force DENY: "
            "any error under on_evaluation_error = deny, an erroring forbid under skip)"
        )
    elif not result.determining_policies:
        default = "" if result.allowed else " (no policy applied: default deny)"
        print(f"determining policies: none{default}")
    else:
        print("determining policies:")
    # Every string may come from a server (--server): shown with its controls escaped.
    for policy_id in result.determining_policies:
        info = policies.get(policy_id)
        where = f"  ({info.location}) {shown_text(info.description)}" if info else ""
        print(f"  - {shown_text(policy_id)}{where}")
    for error in result.errors:
        detail = shown_text(error.detail or error.message)
        print(f"error in policy {shown_text(error.policy_id or '?')}: {detail}")
    version, store = shown_text(result.policy_version), shown_text(result.store_id)
    print(f"policy version: {version} (store {store})")


def _check_remote(args: argparse.Namespace) -> int:
    """The same request and report, answered by the server at ``--server``."""
    from verdict.cedar_json import parse_context_json, parse_entities_json
    from verdict.cli.remote import ask, result_from_reply
    from verdict.errors import VerdictError
    from verdict.uid_arg import parse_uid_arg

    if args.stores is not None:
        fail("--stores and --server exclude each other: the server has its own policies")
    if args.min_version is not None and not 0 <= args.min_version <= MAX_ENTITY_VERSION:
        # protobuf would raise ValueError on the wire field, a traceback.
        fail(f"--min-version: must be between 0 and {MAX_ENTITY_VERSION}")
    try:
        context = parse_context_json(args.context or "")
        entities = parse_entities_json(args.entities or "", "--entities")
        principal = parse_uid_arg(args.principal, "--principal")
        action = parse_uid_arg(args.action, "--action")
        resource = parse_uid_arg(args.resource, "--resource")
    except VerdictError as exc:
        fail(str(exc))  # as the offline check says it (context_json: ..., --action: ...)
    reply = ask(
        args,
        lambda client: client.is_authorized(
            principal,
            action,
            resource,
            context=context,
            store=args.store or "",
            entities=list(entities),
            min_entity_version=args.min_version or 0,
        ),
    )
    result = result_from_reply(reply)
    _print_result(result, {})
    if reply.entity_version:
        print(f"entity version: {reply.entity_version}")
    return EXIT_OK if result.allowed else EXIT_FAILED


def add_check_command(commands: Any) -> None:
    """Register ``verdict check``."""
    check = commands.add_parser(
        "check",
        help=summary("check"),
        description="Answer one decision from the policy files (--stores), or ask a running "
        "server (--server) what it answers. Exit 0 allow, 1 deny, 2 error.",
    )
    check.add_argument("--stores", type=Path, help="folder of policy stores")
    check.add_argument("--store", help="store id (default: the only store, or the server's)")
    check.add_argument(
        "--principal", required=True, help='TYPE::"ID" or TYPE::ID (split at the last ::)'
    )
    check.add_argument("--action", required=True, help='TYPE::"ID" or TYPE::ID, e.g. Action::view')
    check.add_argument("--resource", required=True, help='TYPE::"ID" or TYPE::ID')
    check.add_argument("--context", help="Cedar JSON record")
    check.add_argument("--entities", help="extra Cedar JSON entities for this request")
    add_server_flags(check, required=False)
    check.add_argument(
        "--min-version",
        type=int,
        metavar="VERSION",
        help="with --server: decide with at least this entity version (from entities put/delete)",
    )
    check.set_defaults(func=_check)
