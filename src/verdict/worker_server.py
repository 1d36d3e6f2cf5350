"""One worker process of `verdict serve --workers N`: a whole server, started and watched by the
supervisor over a socket, once verdict.worker (the process's entry point) has set its signals.

The socket carries one line each way first: the supervisor sends the worker's index and
settings (never on the command line, which every local user can read), the worker answers with
its ports once it serves, or with what keeps it from serving (the supervisor prints it as
`verdict serve --workers 1` would). Afterwards it carries reloads made by every worker
(verdict.worker_link), and its end of file tells the worker that the supervisor is gone, and
the supervisor that the worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from verdict import early_signals, event_loop
from verdict.app import App, build_app, shut_down, start, stop
from verdict.config import Settings
from verdict.errors import ConfigError, PolicyLoadError
from verdict.listeners import unusable_listener
from verdict.telemetry.logging import configure_logging
from verdict.transport.open_files import OpenFilesError, ensure_open_files, open_files_needed
from verdict.transport.shutdown_signals import ShutdownSignals
from verdict.worker_link import MAX_LINE_BYTES, SupervisorLink, json_line

log = structlog.get_logger(__name__)
EXIT_ERROR = 2
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Have the kernel send PARENT_DIED (one graceful drain) when the supervisor dies, even
    mid-load.

    Not SIGTERM: the kernel sends the signal each time the supervisor thread the worker hangs
    from dies, and hands the worker to the next thread of the same process (its parent pid
    unchanged) until the last one is gone. Those SIGTERMs, handled one by one on a loaded
    machine, were a stop and then a second stop, which cut the drain to nothing. A signal of
    its own is news of the death however often it comes (ShutdownSignals.supervisor_gone).
    Linux only; elsewhere the end of file on the socket, watched once serving, does the same.
    The parent may have died before this call: then it is too late for the kernel to tell.
    """
    early_signals.exit_quietly_when_parent_dies()  # before the kernel may send it
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, early_signals.PARENT_DIED, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(0)


@dataclass(frozen=True)
class Order:
    """What the supervisor tells a worker it starts: its index and settings, the flags that
    set the listen addresses (for messages) and where the supervisor serves /metrics."""

    index: int
    settings: dict[str, Any]
    names: Mapping[str, str]
    metrics: str | None


def read_order(channel: socket.socket) -> Order:
    """The order the supervisor sent, as one JSON line."""
    # Unbuffered: the supervisor may write a stop right after the order (a stop while this
    # worker starts), and a buffered read would take that line too and drop it.
    with channel.makefile("rb", buffering=0) as lines:
        order = json.loads(lines.readline())
    return Order(
        int(order["index"]),
        dict(order["settings"]),
        {str(k): str(v) for k, v in (order.get("names") or {}).items()},
        order.get("metrics"),
    )


def refusal(message: str) -> bytes:
    """The line that tells the supervisor this worker cannot start, and why: the lines
    `verdict serve --workers 1` would print after ``error:``."""
    return json_line({"error": message})


async def serve(app: App, channel: socket.socket, order: Order, parent: int) -> int:
    """Start, report the ports, serve until SIGTERM/SIGINT or the supervisor is gone, drain."""
    index = order.index
    signals = ShutdownSignals(supervised=True)
    signals.install()
    reader, writer = await asyncio.open_connection(sock=channel, limit=MAX_LINE_BYTES)
    link = SupervisorLink(reader, writer, app.reloader, signals.supervisor_gone, signals.stop_level)
    if app.reloader is not None:
        app.reloader.peers = link  # before serving: the first ReloadPolicies reaches all
    try:
        server = await start(app, worker=index, metrics=order.metrics)
    except (OSError, RuntimeError) as exc:
        # An address taken since the supervisor's check: grpc says only that it could not
        # bind (RuntimeError), so the check runs again to say why; not in the later workers,
        # whose port worker 0 holds (they share it by SO_REUSEPORT, which the check leaves out).
        message = unusable_listener(app.settings, order.names) if index == 0 else None
        if message is None and not isinstance(exc, OSError):
            raise
        writer.write(refusal(message or f"cannot serve: {exc}"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await stop(app, 0)
        return EXIT_ERROR
    ready = {"port": server.port, "health_port": server.health_port, "pid": os.getpid()}
    writer.write(json_line(ready))
    await writer.drain()
    listening = asyncio.get_running_loop().create_task(link.run(), name="supervisor-link")
    await signals.next()
    await shut_down(app, signals)
    listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listening
    await link.close()
    return 0


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index``: each worker writes its own audit file
    (``decisions.w0.jsonl``, ...), a chain of its own that no other process appends to."""
    if settings.audit_sink != "file":
        return settings
    path = settings.audit_file
    return settings.model_copy(
        update={"audit_file": path.with_name(f"{path.stem}.w{index}{path.suffix}")}
    )


def main(argv: Sequence[str]) -> int:
    """Run one worker on the socket ``argv[0]`` (a file descriptor) for supervisor ``argv[1]``."""
    early_signals.stop_quietly_until_serving()  # and a stop kept while importing ends it now
    channel = socket.socket(fileno=int(argv[0]))
    parent = int(argv[1])
    die_with_parent(parent)
    order = read_order(channel)
    index = order.index
    settings = worker_settings(Settings(**order.settings), index)
    configure_logging(settings.log_level, settings.log_format, nonblocking=True)
    structlog.contextvars.bind_contextvars(worker=index)
    redis_connections = settings.redis_max_connections if settings.redis_url else 0
    try:
        ensure_open_files(open_files_needed(settings.max_connections, redis_connections))
        app = build_app(settings)
    except OpenFilesError as exc:
        message = f"cannot serve: {exc}"
    except PolicyLoadError as exc:
        message = f"cannot load policy stores:\n{exc}"
    except ConfigError as exc:
        message = f"invalid configuration:\n{exc}"
    else:
        # The supervisor's command checked that the chosen loop is available.
        return event_loop.run(serve(app, channel, order, parent), settings.event_loop)
    # The messages of `verdict serve --workers 1`, which the supervisor prints as it does.
    with contextlib.suppress(OSError):  # a supervisor gone has nobody to tell
        channel.sendall(refusal(message))
    return EXIT_ERROR
