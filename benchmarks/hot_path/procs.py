"""Server processes on loopback: start, wait until serving, CPU and memory of a tree, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """One server (and whatever processes it forks) on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    ready_s: float = 0.0  # from spawn to SERVING

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The server and its descendants (worker processes), now."""
        return process_tree(self.process.pid)


def spawn(
    name: str, argv: Sequence[str], port: int, logdir: Path, env: Mapping[str, str] | None = None
) -> Proc:
    """Start ``argv`` in its own session (so it and its workers can be stopped by its id)."""
    log = logdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env) if env is not None else None,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    return Proc(name, port, process, log)


def popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a helper process (py-spy, a client) without waiting for it."""
    return subprocess.Popen(list(argv), cwd=ROOT, **kwargs)


def python_argv(*args: str) -> list[str]:
    """``python -m ...`` with this interpreter."""
    return [sys.executable, "-m", *args]


def stop(proc: Proc, timeout: float = 15.0) -> None:
    """SIGTERM (Verdict drains), then SIGKILL the session we started if it lingers."""
    if proc.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.process.send_signal(signal.SIGTERM)
    try:
        proc.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.pid, signal.SIGKILL)
        proc.process.wait(timeout=10)
    # Workers left behind by a killed parent keep its session id: end them too, one by one.
    for pid in session_members(proc.process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def session_members(session: int) -> list[int]:
    """Live processes whose session id is ``session`` (the servers we started and their forks)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == session and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from the ppid field of /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` (threads included), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine_busy_seconds() -> float:
    """All CPUs' user + nice + system time so far."""
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split()[1:4])
    return (user + nice + system) / TICKS


def memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(sum of VmRSS, largest VmHWM) over ``pids``: the tree's resident set and the peak of
    its largest process (one worker)."""
    rss, peak = 0, 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return rss, peak


async def wait_health(proc: Proc, limit_s: float, service: str = "") -> None:
    """Poll grpc.health.v1 until SERVING; fail early if the process died."""
    deadline = time.monotonic() + limit_s
    async with grpc.aio.insecure_channel(proc.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{tail}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                request = health_pb2.HealthCheckRequest(service=service)
                reply = await stub.Check(request, timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    proc.ready_s = time.monotonic() - proc.started
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not report SERVING within {limit_s:.0f} s")


def has_flag(argv: Sequence[str], flag: str) -> bool:
    """Whether ``argv --help`` lists ``flag`` (feature detection of the CLI)."""
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, check=False, cwd=ROOT)
    return flag in out.stdout
