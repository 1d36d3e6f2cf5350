"""The ``verdict`` command line: serve, check, validate."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from verdict import __version__
from verdict.app import build_app, entity_files, run
from verdict.authoring.audit_cli import add_audit_command
from verdict.authoring.cli import add_authoring_commands
from verdict.authoring.warnings import store_warnings
from verdict.cedar_json import parse_context_json, parse_entities_json
from verdict.cli_entities import add_entities_command
from verdict.config import Settings
from verdict.errors import ConfigError, PolicyLoadError, VerdictError
from verdict.healthcheck import add_healthcheck_command
from verdict.model import AuthorizationRequest, AuthorizationResult
from verdict.policy.loader import load_policy_stores
from verdict.policy.snapshot import PolicyInfo
from verdict.policytest.cli import add_test_command
from verdict.store.memory import MemoryEntityStore
from verdict.supervisor import cpu_count, supervise
from verdict.telemetry.logging import configure_logging
from verdict.transport.open_files import OpenFilesError, ensure_open_files, open_files_needed
from verdict.uid_arg import parse_uid_arg

EXIT_ALLOW, EXIT_DENY, EXIT_ERROR = 0, 1, 2


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "stores": args.stores,
            "default_store": args.default_store,
            "listen": args.listen,
            "max_batch_size": args.max_batch_size,
            "log_level": args.log_level,
            "redis_url": args.redis_url,
            "metrics_listen": args.metrics_listen,
            "redis_cluster": args.redis_cluster or None,
            "max_connections": args.max_connections,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "health_listen": args.health_listen,
            "callers_file": args.callers_file,
            "workers": args.workers,
            "audit_sink": args.audit_sink,
            "log_format": args.log_format,
            "audit_file": args.audit_file,
            "audit_mode": args.audit_mode,
            "shutdown_drain_seconds": args.shutdown_drain_seconds,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    configure_logging(settings.log_level, settings.log_format)
    workers = settings.workers or cpu_count()
    if workers > 1:
        return supervise(settings, workers)
    redis_connections = settings.redis_max_connections if settings.redis_url else 0
    try:
        health = settings.max_health_connections if settings.health_listen else 0
        needed = open_files_needed(settings.max_connections + health, redis_connections)
        ensure_open_files(needed)
    except OpenFilesError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        app = build_app(settings)
    except PolicyLoadError as exc:
        print(f"cannot load policy stores:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    asyncio.run(run(app))
    return 0


def _check(args: argparse.Namespace) -> int:
    configure_logging("error", "console")
    try:
        app = build_app(Settings(stores=args.stores, default_store=args.store))
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
        return EXIT_ERROR
    _print_result(result, app.policies.current.resolve(result.store_id).policies)
    return EXIT_ALLOW if result.allowed else EXIT_DENY


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
    for policy_id in result.determining_policies:
        info = policies.get(policy_id)
        where = f"  ({info.location}) {info.description}" if info else ""
        print(f"  - {policy_id}{where}")
    for error in result.errors:
        print(f"error in policy {error.policy_id or '?'}: {error.detail or error.message}")
    print(f"policy version: {result.policy_version} (store {result.store_id})")


def _validate(args: argparse.Namespace) -> int:
    try:
        snapshot = load_policy_stores(args.stores, args.default_store)
        # Entities are validated too: a broken entities.json stops `make run` just the same.
        MemoryEntityStore.from_files(entity_files(snapshot))
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.diagnostics)} problem(s) found", file=sys.stderr)
        return 1
    for store in snapshot.stores.values():
        templates = sum(1 for p in store.policies.values() if p.is_template)
        print(
            f"{store.store_id}: {len(store.policies) - templates} policies "
            f"(templates {templates}), "
            f"schema {'yes' if store.schema is not None else 'no'}, "
            f"validation {store.settings.validation.value}, version {store.version}"
        )
    warnings = [w for store in snapshot.stores.values() for w in store_warnings(store)]
    for warning in warnings:
        print(f"{warning.file}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    if warnings and args.strict:
        print(f"{len(warnings)} warning(s) with --strict", file=sys.stderr)
        return 1
    return 0


def add_security_flags(serve: argparse.ArgumentParser) -> None:
    """TLS, mutual TLS, the plaintext health port and the callers file."""
    serve.add_argument(
        "--tls-cert", type=Path, help="server certificate chain, PEM (VERDICT_TLS_CERT)"
    )
    serve.add_argument("--tls-key", type=Path, help="server private key, PEM (VERDICT_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="CA bundle for client certificates; given, every client must present one "
        "(mutual TLS; VERDICT_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--health-listen",
        help="HOST:PORT for grpc.health.v1 in plaintext, for probes when TLS is on "
        "(VERDICT_HEALTH_LISTEN)",
    )
    serve.add_argument(
        "--shutdown-drain-seconds",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING at once but keep serving this long before "
        "refusing calls, so Kubernetes removes the endpoint first (VERDICT_SHUTDOWN_DRAIN_SECONDS; "
        "default 0)",
    )
    serve.add_argument(
        "--callers-file",
        type=Path,
        help="callers.toml: which caller may call which methods on which stores "
        "(VERDICT_CALLERS_FILE; required with TLS)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="verdict", description=("Verdict: a Cedar policy decision point served over gRPC.")
    )
    parser.add_argument("--version", action="version", version=f"verdict {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve decisions over gRPC",
        description="Serve IsAuthorized/BatchAuthorize over gRPC. Every "
        "flag also reads from VERDICT_<NAME> environment variables.",
    )
    serve.add_argument("--stores", type=Path, help="folder of policy stores (VERDICT_STORES)")
    serve.add_argument(
        "--default-store",
        help="store used when a request names none (default: the only store; with several "
        "stores and none chosen, requests must name theirs)",
    )
    serve.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    serve.add_argument("--max-batch-size", type=int, help="largest BatchAuthorize (default 100)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, one event loop each (VERDICT_WORKERS; default: "
        "one per CPU; 1 serves in this process). Above 1, the in-memory store refuses entity "
        "writes: use Redis",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error")
    serve.add_argument(
        "--max-connections",
        type=int,
        help="open client connections held at once (VERDICT_MAX_CONNECTIONS; default 1000)",
    )
    serve.add_argument(
        "--redis-url",
        help="read entities from Redis (redis://, rediss://, "
        "unix://) instead of memory (VERDICT_REDIS_URL)",
    )
    serve.add_argument(
        "--metrics-listen",
        help="HOST:PORT to serve Prometheus /metrics on (VERDICT_METRICS_LISTEN; default off)",
    )
    serve.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the Redis URL names a cluster node (VERDICT_REDIS_CLUSTER)",
    )
    add_security_flags(serve)
    serve.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help="JSON lines, or console output for people (VERDICT_LOG_FORMAT; default auto: "
        "console on a terminal, JSON otherwise)",
    )
    serve.add_argument(
        "--audit-sink",
        choices=["none", "file", "stdout", "redis"],
        help="decision audit log: where records go (VERDICT_AUDIT_SINK; default none)",
    )
    serve.add_argument(
        "--audit-file", type=Path, help="JSONL file of the file sink (VERDICT_AUDIT_FILE)"
    )
    serve.add_argument(
        "--audit-mode",
        choices=["block", "deny", "drop"],
        help="when the sink is slow or down: wait, refuse the decision (default), or drop",
    )
    serve.set_defaults(func=_serve)

    check = commands.add_parser(
        "check",
        help="answer one decision offline",
        description="Answer one decision from the policy files, without a "
        "server. Exit 0 allow, 1 deny, 2 error.",
    )
    check.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    check.add_argument("--store", help="store id (default: the only store)")
    check.add_argument(
        "--principal", required=True, help='TYPE::"ID" or TYPE::ID (split at the last ::)'
    )
    check.add_argument("--action", required=True, help='TYPE::"ID" or TYPE::ID, e.g. Action::view')
    check.add_argument("--resource", required=True, help='TYPE::"ID" or TYPE::ID')
    check.add_argument("--context", help="Cedar JSON record")
    check.add_argument("--entities", help="extra Cedar JSON entities for this request")
    check.set_defaults(func=_check)

    validate = commands.add_parser(
        "validate",
        help="check every policy store",
        description="Check syntax, schema, ids, links and entities of every store; print "
        "file:line problems, then warnings (policies that can never apply, templates without "
        "links). Exit 0 valid, 1 invalid (or warnings with --strict).",
    )
    validate.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    validate.add_argument("--default-store", help="store that must exist as the default")
    validate.add_argument(
        "--strict", action="store_true", help="treat warnings as problems (exit 1)"
    )
    validate.set_defaults(func=_validate)

    add_test_command(commands)
    add_entities_command(commands)
    add_authoring_commands(commands)
    add_audit_command(commands)
    add_healthcheck_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``verdict`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
