"""``verdict healthcheck``: ask a running server's grpc.health.v1 whether it serves (exit 0/1)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verdict.cli.client_checks import bearer_token, flag_problems, tls_problems
from verdict.cli.commands import summary
from verdict.cli.common import fail
from verdict.cli.server_flags import add_tls_flags, add_token_flag, timeout_seconds
from verdict.client import bearer, tls_credentials

EXIT_SERVING, EXIT_UNHEALTHY = 0, 1
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 2.0
SERVING = "SERVING"
# Why a call failed, by status code; the server's own detail text is never printed: one short
# line is all a probe log or `docker inspect` needs.
_FAILURES = {
    grpc.StatusCode.UNAVAILABLE: "unreachable (UNAVAILABLE)",
    grpc.StatusCode.DEADLINE_EXCEEDED: "no answer within the timeout (DEADLINE_EXCEEDED)",
    grpc.StatusCode.NOT_FOUND: "no such health service name (NOT_FOUND)",
    grpc.StatusCode.UNIMPLEMENTED: "does not serve grpc.health.v1 (UNIMPLEMENTED)",
}


def check(
    server: str,
    *,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    metadata: Sequence[tuple[str, str]] = (),
) -> str:
    """One grpc.health.v1 Check of ``service`` ("" = the whole server) at ``server``:
    ``SERVING``, or a short reason why not (the status reported, or why the call failed)."""
    # One attempt, failing fast on a refused connection: the prober (Docker, the kubelet) retries.
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if credentials is None:
        channel = grpc.insecure_channel(server, options=options)
    else:
        channel = grpc.secure_channel(server, credentials, options=options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout,
                metadata=tuple(metadata),
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            return _FAILURES.get(code, f"health check failed ({code.name})")
    try:
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except ValueError:  # proto3 keeps enum values it does not know: not SERVING either
        return f"unknown status ({reply.status})"
    return name


def _run(args: argparse.Namespace) -> int:
    problems = flag_problems(args)
    if problems:  # bad flags: exit 2, as argparse's own refusals
        fail("\n".join(problems))
    where = args.server + (f" service {args.service!r}" if args.service else "")
    credentials = None
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name:
        # A TLS file that cannot be used is unhealthy (exit 1), as documented for probes.
        unusable = tls_problems(args)
        if unusable:
            print(f"verdict healthcheck: {unusable[0]}", file=sys.stderr)
            return EXIT_UNHEALTHY
        credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    # With a callers file, the main port answers store/<id> only to a caller granted it.
    token = bearer_token(args)
    status = check(
        args.server,
        service=args.service,
        timeout=args.timeout,
        credentials=credentials,
        server_name=args.tls_server_name,
        metadata=bearer(token) if token else (),
    )
    if status == SERVING:
        return EXIT_SERVING
    print(f"verdict healthcheck: {where}: {status}", file=sys.stderr)
    return EXIT_UNHEALTHY


def add_healthcheck_command(commands: Any) -> None:
    """Register ``healthcheck`` on the subcommands of the ``verdict`` parser."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "healthcheck",
        help=summary("healthcheck"),
        description="Ask a running Verdict server over grpc.health.v1 whether it serves. "
        "Exit 0 when it reports SERVING; 1 otherwise (NOT_SERVING, unknown service name, "
        "unreachable, no answer within the timeout, unreadable TLS files), with one line on "
        "stderr saying which; 2 for bad flags. In a container point it at the plaintext health "
        "port (`verdict serve --health-listen`).",
    )
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        metavar="HOST:PORT",
        help=f"where the server (or its --health-listen port) listens (default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help='health service name: "" (default) the whole server, or e.g. '
        "verdict.v1.AuthorizationService, store/<store id>",
    )
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of the call (default {DEFAULT_TIMEOUT:g})",
    )
    add_tls_flags(parser)
    add_token_flag(parser)
    parser.set_defaults(func=_run)
