"""Whether `verdict serve` can listen on its addresses, checked before anything binds them."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Mapping

from verdict.config import Settings

# The addresses a server listens on, and the part of a message that names each: the gRPC
# address is the server's own; the others say which setting they came from.
LISTEN_FIELDS = ("listen", "health_listen", "metrics_listen")
_LOOKS_NUMERIC = re.compile(r"[0-9.]+|.*:.*")  # an IPv4 or IPv6 literal, not a host name


class ListenError(Exception):
    """A server cannot listen where it was told: ``message`` is the whole error line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def listen_problem(listen: str) -> str | None:
    """Why this host cannot listen on ``HOST:PORT``, or None when a bind would do (or the
    form is grpc's to judge: ``unix:...``).

    Probed with a bind without SO_REUSEPORT: workers bind with it, which would let them join
    the listeners of another server of the same user (another `verdict serve --workers`) and
    share its traffic unnoticed; a bind without it fails on any listener. grpc itself said
    only "Failed to bind to address" (a RuntimeError traceback) for every other reason."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return None
    name = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(
            name or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError):
        # 256.1.1.1 goes to the resolver as a name too, and is not found.
        return "not a valid address" if _bad_literal(name) else "host name not found"
    # grpc serves when any of the addresses binds ("localhost" without IPv6 in a container):
    # the host is refused only when none does, but a port another socket holds on any of them
    # is refused at once.
    problems = []
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return bind_problem(exc)
            problems.append(bind_problem(exc))
    return problems[0] if problems and len(problems) == len(addresses) else None


def _bad_literal(name: str) -> bool:
    if not _LOOKS_NUMERIC.fullmatch(name):
        return False
    try:
        ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return True
    return False


def bind_problem(exc: OSError) -> str:
    """What a failed bind says of its address, in the words of `cannot listen on`."""
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):  # EINVAL: fe80::1 without its scope
        return "address not available on this host"
    if exc.errno == errno.EACCES:
        return "permission denied (a port below 1024 needs privileges)"
    return (exc.strerror or str(exc)).lower()


def listen_message(listen: str, problem: str, named: str = "") -> str:
    """What `verdict serve` says, and exits 2 with, when it cannot listen on ``listen``;
    ``named`` (`--metrics-listen`, `VERDICT_HEALTH_LISTEN`) says which address it is."""
    shown = f" ({named})" if named else ""
    return f"cannot listen on {listen}{shown}: {problem}"


def unusable_listener(settings: Settings, names: Mapping[str, str]) -> str | None:
    """The message for the first of the gRPC, health and metrics addresses this host cannot
    listen on, if any; ``names`` maps their fields to the flags that set them (the others came
    from VERDICT_* variables)."""
    for field in LISTEN_FIELDS:
        listen = getattr(settings, field)
        if listen is None:
            continue
        problem = listen_problem(listen)
        if problem is not None:
            named = "" if field == "listen" else names.get(field, f"VERDICT_{field.upper()}")
            return listen_message(listen, problem, named)
    return None
