"""Run `verdict serve` as a real subprocess on a free loopback port, with a client to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from tests.conftest import POLICIES
from verdict.client import VerdictClient


def free_port() -> int:
    """A currently unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
