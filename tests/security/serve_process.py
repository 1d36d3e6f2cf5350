"""Start `verdict serve` as a subprocess with optional resource limits, for the server tests."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from tests.processes import free_port


def limit_open_files(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` that sets the child's soft and hard RLIMIT_NOFILE to ``limit``."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def serve_command(stores: Path, port: int, *args: str) -> list[str]:
    """The argv of `verdict serve` on ``stores`` listening on loopback ``port``."""
    return [
        sys.executable,
        "-m",
        "verdict",
        "serve",
        "--stores",
        str(stores),
        "--listen",
        f"127.0.0.1:{port}",
        *args,
    ]


@contextmanager
def running_server(
    stores: Path, *args: str, env: dict[str, str] | None = None, nofile: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A ready `verdict serve` (process, port), killed after the block. A port found free
    can be taken by a test running beside this one before the server binds it: the server
    then exits "address already in use", and another free port is tried (3 in all)."""
    for attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            serve_command(stores, port, *args),
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if nofile is None else limit_open_files(nofile),
        )
        try:
            _wait_until_ready(process, port)
        except AssertionError as exc:
            process.kill()
            process.communicate(timeout=10)
            if "address already in use" in str(exc) and attempt < 2:
                continue
            raise
        break
    try:
        yield process, port
    finally:
        process.kill()
        process.communicate(timeout=10)


def _wait_until_ready(process: subprocess.Popen[str], port: int) -> None:
    """Return once the server accepts connections; fail at once if it exits first."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = grpc.channel_ready_future(channel)
        for _ in range(80):
            try:
                ready.result(timeout=0.25)
                return
            except grpc.FutureTimeoutError:
                if process.poll() is not None:
                    stderr = process.communicate(timeout=10)[1]
                    message = f"verdict serve exited {process.returncode}: {stderr}"
                    raise AssertionError(message) from None
        raise AssertionError("verdict serve did not start within 20 s")


def fresh_channel(port: int) -> grpc.Channel:
    """A channel with its own connection (not shared through grpc's global subchannel pool)."""
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def wait_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once ``port`` accepts gRPC connections; fail if the process exits first."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                ready.result(timeout=0.25)
                return
            except grpc.FutureTimeoutError:
                assert process.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "verdict serve did not start"
