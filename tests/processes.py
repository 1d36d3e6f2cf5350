"""Run `verdict serve` as a real subprocess on a free loopback port, with a client to it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.conftest import POLICIES
from verdict.client import VerdictClient


def free_port() -> int:
    """A currently unused loopback TCP port, from a band below the kernel's ephemeral range of
    this pytest worker's own: a port the kernel hands out (bind to 0) can be taken by any
    outgoing connection, or by a test beside this one, before the server binds it (seen in CI:
    "address already in use"); these are taken only by an explicit bind."""
    for _ in range(_BAND):
        port = next(_candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or lingering from an earlier server (TIME_WAIT)
            return port
    with socket.socket() as sock:  # the whole band busy: what the kernel offers
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _band_ports() -> Iterator[int]:
    """This worker's ports in turn, from a random start: 16 bands of 700 below 32768 (the
    default ephemeral range starts there; where it starts lower, the kernel's choice)."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _FIRST + (int(worker) % 16 if worker.isdigit() else 0) * _BAND
    if low + _BAND > ephemeral_low:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                yield int(sock.getsockname()[1])
    ports = list(range(low, low + _BAND))
    start = random.randrange(_BAND)
    while True:
        yield from ports[start:] + ports[:start]


_FIRST, _BAND = 21_000, 700
_candidates = _band_ports()


@dataclass
class ServerProcess:
    """A running server, its client, and (after the block) what it wrote to stderr."""

    process: subprocess.Popen[str]
    client: VerdictClient
    port: int
    stderr: str = ""


@contextmanager
def verdict_server(*args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """`verdict serve` on the sample policies plus ``args``; killed after the block if alive.

    One process (``--workers 1``) unless ``args`` say otherwise: the default is one worker per
    CPU, and a test that kills the process or writes to its in-memory store means that one.
    """
    port = free_port()
    if "--workers" not in args:
        args = ("--workers", "1", *args)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verdict",
            "serve",
            "--stores",
            str(POLICIES),
            "--default-store",
            "lending",
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    with VerdictClient(f"127.0.0.1:{port}", timeout=5) as client:
        server = ServerProcess(process, client, port)
        try:
            grpc.channel_ready_future(client._channel).result(timeout=20)
            yield server
        finally:
            process.kill()
            server.stderr = process.communicate(timeout=10)[1]
