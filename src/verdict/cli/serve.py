"""``verdict serve``: serve decisions over gRPC, in this process or as a supervisor of workers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_OK, check_redis_url, fail, load_settings, setting_help

# Settings field -> flag, for the flags that set one (messages name what the user typed).
FLAGS = {
    "stores": "--stores",
    "default_store": "--default-store",
    "listen": "--listen",
    "max_batch_size": "--max-batch-size",
    "log_level": "--log-level",
    "redis_url": "--redis-url",
    "metrics_listen": "--metrics-listen",
    "redis_cluster": "--redis-cluster",
    "max_connections": "--max-connections",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "tls_client_ca": "--tls-client-ca",
    "health_listen": "--health-listen",
    "callers_file": "--callers-file",
    "workers": "--workers",
    "event_loop": "--event-loop",
    "audit_sink": "--audit-sink",
    "log_format": "--log-format",
    "audit_file": "--audit-file",
    "audit_mode": "--audit-mode",
    "audit_key_file": "--audit-key-file",
    "shutdown_drain_seconds": "--shutdown-drain-seconds",
}


def _serve(args: argparse.Namespace) -> int:
    from verdict import early_signals

    early_signals.keep_until_serving()  # first: the imports below take a while too
    # The server's modules (grpc, Cedar, Redis) are imported to serve, not for --help.
    from verdict import event_loop
    from verdict.app import build_app, run
    from verdict.cli.store_folders import stores_folder_problem
    from verdict.cpus import cpu_count
    from verdict.errors import ConfigError, PolicyLoadError
    from verdict.event_loop import EventLoopError
    from verdict.listeners import unusable_listener
    from verdict.supervisor import StartFailed, supervise
    from verdict.telemetry.logging import configure_logging
    from verdict.transport.open_files import OpenFilesError, ensure_open_files, open_files_needed

    # Imported: a stop kept meanwhile ends the process now, and one during the load at once.
    early_signals.stop_quietly_until_serving()
    check_redis_url("--redis-url", args.redis_url)  # VERDICT_REDIS_URL: Settings checks it
    overrides = {field: getattr(args, field) for field in FLAGS}
    overrides["redis_cluster"] = args.redis_cluster or None
    settings = load_settings(overrides, FLAGS)
    given = {field: FLAGS[field] for field, value in overrides.items() if value is not None}
    if "stores" not in given:  # --stores: checked by `run`
        problem = stores_folder_problem("VERDICT_STORES", settings.stores, variable=True)
        if problem is not None:
            fail(problem)
    configure_logging(settings.log_level, settings.log_format, nonblocking=True)
    try:
        event_loop.resolve(settings.event_loop)  # before any worker starts
    except EventLoopError as exc:
        fail(f"cannot serve: {exc}")
    # Before any worker starts: grpc says only "Failed to bind to address" (a traceback).
    unusable = unusable_listener(settings, given)
    if unusable is not None:
        fail(unusable)
    workers = settings.workers or cpu_count()
    if workers > 1:
        try:
            return supervise(settings, workers, given)
        except StartFailed as exc:
            fail(exc.message, exc.code)
    redis_connections = settings.redis_max_connections if settings.redis_url else 0
    try:
        health = settings.max_health_connections if settings.health_listen else 0
        needed = open_files_needed(settings.max_connections + health, redis_connections)
        ensure_open_files(needed)
    except OpenFilesError as exc:
        fail(f"cannot serve: {exc}")
    try:
        app = build_app(settings)
    except PolicyLoadError as exc:
        fail(f"cannot load policy stores:\n{exc}")
    except ConfigError as exc:
        fail(f"invalid configuration:\n{exc}")
    try:
        event_loop.run(run(app), settings.event_loop)
    except (OSError, RuntimeError) as exc:
        # Taken between the check above and the bind: grpc says only that it could not bind
        # (RuntimeError), so the check runs again to say why.
        again = unusable_listener(settings, given)
        if again is None and not isinstance(exc, OSError):
            raise
        fail(again or f"cannot serve: {exc}")
    return EXIT_OK


def add_security_flags(serve: argparse.ArgumentParser) -> None:
    """TLS, mutual TLS, the plaintext health port and the callers file."""
    serve.add_argument(
        "--tls-cert", type=Path, help=setting_help("server certificate chain, PEM", "tls_cert")
    )
    serve.add_argument(
        "--tls-key", type=Path, help=setting_help("server private key, PEM", "tls_key")
    )
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help=setting_help(
            "CA bundle for client certificates; given, every client must present one (mutual TLS)",
            "tls_client_ca",
        ),
    )
    serve.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help=setting_help(
            "grpc.health.v1 in plaintext, for probes when TLS is on", "health_listen"
        ),
    )
    serve.add_argument(
        "--shutdown-drain-seconds",
        type=float,
        metavar="SECONDS",
        help=setting_help(
            "on SIGTERM, report NOT_SERVING at once but keep serving this long before "
            "refusing calls, so Kubernetes removes the endpoint first",
            "shutdown_drain_seconds",
        ),
    )
    serve.add_argument(
        "--callers-file",
        type=Path,
        help=setting_help(
            "callers.toml: which caller may call which methods on which stores (required with TLS)",
            "callers_file",
        ),
    )


def add_serve_command(commands: Any) -> None:
    """Register ``verdict serve``."""
    serve = commands.add_parser(
        "serve",
        help=summary("serve"),
        description="Serve IsAuthorized/BatchAuthorize over gRPC. Every "
        "flag also reads from VERDICT_<NAME> environment variables. Exit 2 when the server "
        "cannot start (settings, policy stores, a port in use).",
    )
    serve.add_argument(
        "--stores", type=Path, help=setting_help("folder of policy stores", "stores")
    )
    serve.add_argument(
        "--default-store",
        help=setting_help(
            "store used when a request names none (unset: the only store; with several "
            "stores and none chosen, requests must name theirs)",
            "default_store",
        ),
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help=setting_help("gRPC address (or :PORT)", "listen")
    )
    serve.add_argument(
        "--max-batch-size", type=int, help=setting_help("largest BatchAuthorize", "max_batch_size")
    )
    serve.add_argument(
        "--workers",
        type=int,
        help=setting_help(
            "server processes sharing the port, one event loop each (unset: one per CPU; "
            "1 serves in this process). Above 1, the in-memory store refuses entity writes: "
            "use Redis",
            "workers",
        ),
    )
    serve.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        help=setting_help("uvloop (auto: when installed) or asyncio's own loop", "event_loop"),
    )
    serve.add_argument("--log-level", help=setting_help("debug, info, warning, error", "log_level"))
    serve.add_argument(
        "--max-connections",
        type=int,
        help=setting_help("open client connections held at once", "max_connections"),
    )
    serve.add_argument(
        "--redis-url",
        help=setting_help(
            "read entities from Redis (redis://, rediss://, unix://) instead of memory, under "
            "the key prefix VERDICT_REDIS_NAMESPACE (default: verdict; `entities load` reads "
            "it too)",
            "redis_url",
        ),
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help=setting_help("serve Prometheus /metrics here (unset: off)", "metrics_listen"),
    )
    serve.add_argument(
        "--redis-cluster",
        action="store_true",
        help=setting_help("the Redis URL names a cluster node", "redis_cluster"),
    )
    add_security_flags(serve)
    serve.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help=setting_help(
            "JSON lines, or console output for people (auto: console on a terminal, JSON "
            "otherwise)",
            "log_format",
        ),
    )
    serve.add_argument(
        "--audit-sink",
        choices=["none", "file", "stdout", "redis"],
        help=setting_help("decision audit log: where records go", "audit_sink"),
    )
    serve.add_argument(
        "--audit-file",
        type=Path,
        help=setting_help("JSONL file of the file sink", "audit_file"),
    )
    serve.add_argument(
        "--audit-mode",
        choices=["block", "deny", "drop"],
        help=setting_help(
            "when the sink is slow or down: wait, refuse the decision, or drop", "audit_mode"
        ),
    )
    serve.add_argument(
        "--audit-key-file",
        type=Path,
        metavar="FILE",
        help=setting_help(
            "file holding a secret of 32+ bytes: each audit record is signed (HMAC-SHA256), so "
            "`verdict audit verify --key-file` finds records made without it",
            "audit_key_file",
        ),
    )
    serve.set_defaults(func=_serve)
