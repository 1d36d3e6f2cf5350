"""What a command checks before it asks a running server: the address, TLS files and token."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from verdict.cli.server_flags import TOKEN_VARIABLE

# Only the standard library: `healthcheck` imports this, and runs every few seconds.
ADDRESS_FORM = "must be HOST:PORT, e.g. 127.0.0.1:50051"
TOKEN_FORM = "must be printable ASCII without spaces or control characters"
_CERTIFICATE = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
# A gRPC target that is not a network address: passed on as given.
_LOCAL_SCHEMES = ("unix:", "unix-abstract:", "vsock:")


def address_problem(value: str) -> str | None:
    """Why ``value`` is not a server address, or None: HOST:PORT ([v6]:PORT), as --listen
    asks (without a port grpc would silently try 443)."""
    if value.startswith(_LOCAL_SCHEMES):
        return None
    host, sep, port = value.rpartition(":")
    # "::1" without brackets is a host whose port cannot be told apart: refused too.
    if not sep or not host or not port.isdigit() or int(port) > 65535 or host.endswith(":"):
        return ADDRESS_FORM
    return None


def tls_problem(flag: str, path: Path | None) -> str | None:
    """Why the PEM file of ``flag`` cannot be used, or None: read here, so that the flag at
    fault is named (grpc's C core would log its own lines, then fail every call)."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{flag}={path}: cannot read ({exc.strerror or 'unreadable'})"
    if flag == "--tls-key":
        if _PRIVATE_KEY.search(data) is None:
            return f"{flag}={path}: is not a PEM private key"
    elif _CERTIFICATE.search(data) is None:
        return f"{flag}={path}: is not a PEM certificate"
    return None


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot travel as a bearer token, or None (it is never part of the answer:
    it is a secret). gRPC refuses metadata with control characters only once the call fails."""
    if all("!" <= character <= "~" for character in token):
        return None
    return TOKEN_FORM


def bearer_token(args: argparse.Namespace) -> str:
    """The token of --token, else of VERDICT_TOKEN ("" for none)."""
    token: str = args.token or os.environ.get(TOKEN_VARIABLE, "")
    return token


def flag_problems(args: argparse.Namespace) -> list[str]:
    """The usage errors of --server and the token (``--token`` or its variable, as given)."""
    problems = []
    address = address_problem(args.server)
    if address is not None:
        problems.append(f"--server={args.server}: {address}")
    if token_problem(bearer_token(args)) is not None:
        problems.append(f"{'--token' if args.token else TOKEN_VARIABLE}: {TOKEN_FORM}")
    return problems


def tls_problems(args: argparse.Namespace) -> list[str]:
    """Why the files of --tls-ca, --tls-cert and --tls-key cannot be used, each named (a
    certificate without its key, or the reverse, alone: the files are not read then)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        return ["--tls-cert and --tls-key go together"]
    files = (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key))
    return [p for p in (tls_problem(flag, path) for flag, path in files) if p is not None]
