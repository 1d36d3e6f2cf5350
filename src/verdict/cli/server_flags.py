"""The flags of the commands that ask a running server: --server, TLS, --token, --timeout."""

from __future__ import annotations

import argparse
from pathlib import Path

from verdict.cli.common import positive_float

TOKEN_VARIABLE = "VERDICT_TOKEN"
DEFAULT_TIMEOUT = 10.0
# --timeout of a call to the server: a millisecond to a day (a larger deadline overflows
# gRPC's clock and fails at once as DEADLINE_EXCEEDED, blaming the server).
timeout_seconds = positive_float("--timeout", 0.001, 86_400.0)


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key, --tls-server-name: how to reach a server over TLS."""
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="speak TLS (as does any --tls-* flag), trusting this CA bundle (PEM) for the "
        "server's certificate (unset: the system's CAs)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="client certificate chain for mutual TLS"
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="client private key")
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server certificate must carry, when it is not the HOST of --server",
    )


def add_server_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--server, its TLS flags, --token and --timeout."""
    parser.add_argument(
        "--server",
        required=required,
        metavar="HOST:PORT",
        help="ask the Verdict server listening here"
        + ("" if required else " instead of loading policy files"),
    )
    add_tls_flags(parser)
    add_token_flag(parser)
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="deadline of each call",
    )


def add_token_flag(parser: argparse.ArgumentParser) -> None:
    """--token: the caller's bearer token."""
    parser.add_argument(
        "--token",
        help=f"bearer token (static or JWT) sent with every call (or {TOKEN_VARIABLE}, which "
        "keeps it out of the process list)",
    )
