"""Run `verdict serve --workers N` as a real process tree and read what it says and counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import POLICIES

Event = dict[str, Any]


@dataclass
class Supervised:
    """The supervisor process, its log file (JSON lines of it and its workers) and ports."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    metrics_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events(self, name: str | None = None) -> list[Event]:
        """Every JSON log line so far (named ``name``, if given)."""
        lines = self.log.read_text().splitlines()
        # grpc core writes its own (non-JSON) text to the same stderr, and it can land before
        # or inside a Python line: read every JSON object that starts anywhere in a line.
        events = [event for line in lines for event in _json_objects(line)]
        return [e for e in events if name is None or e["event"] == name]

    def wait_for(self, name: str, count: int = 1, within: float = 60.0) -> list[Event]:
        """Wait until ``count`` log lines named ``name`` were written; returns them."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.process.poll() is not None and len(self.events(name)) < count:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {name}; log:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> dict[int, int]:
        """The pid of each worker index, the latest one started."""
        return {e["worker"]: e["pid"] for e in self.events("worker_ready")}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``, from /metrics."""
        return scraped_metric(self.metrics_port, name, **labels)


def scraped_metric(metrics_port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, read from the
    /metrics of the server whose metrics port is ``metrics_port``."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs."""
    return not alive(pid)


def wait_until(condition: Callable[[], bool], within: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds passed; returns whether it held."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def serve_command(*args: str, stores: Path = POLICIES, default: str = "lending") -> list[str]:
    """`verdict serve` on ``stores`` (and their ``default`` store) plus ``args``."""
    command = [sys.executable, "-m", "verdict", "serve", "--stores", str(stores)]
    return [*command, "--default-store", default, *args]


@contextmanager
def verdict_workers(
    workdir: Path, *args: str, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[Supervised]:
    """`verdict serve --workers N` on port 0 with /metrics on port 0, once every worker serves;
    the whole tree is killed after the block if still alive."""
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    command = serve_command("--workers", str(workers), "--listen", "127.0.0.1:0")
    command += ["--metrics-listen", "127.0.0.1:0", *args]
    # Append mode: the workers share this file, and only O_APPEND keeps their lines whole.
    with log.open("ab") as sink:
        # TMPDIR: a supervisor killed by a test leaves its metrics folder in the test's folder.
        env = {**os.environ, "TMPDIR": str(workdir), **(env or {})}
        process = subprocess.Popen(command, env=env, stderr=sink)
    supervised = Supervised(process, log)
    try:
        started = supervised.wait_for("workers_started")[0]
        supervised.port = int(started["listen"].rpartition(":")[2])
        supervised.metrics_port = supervised.wait_for("supervisor_started")[0]["metrics_port"]
        yield supervised
    finally:
        pids = list(supervised.worker_pids().values())
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in pids:  # PR_SET_PDEATHSIG makes them drain and go; never leave one behind
            if not wait_until(partial(gone, pid), 15):
                os.kill(pid, 9)


def fresh_channel(target: str) -> grpc.Channel:
    """A channel with its own TCP connection (grpc otherwise shares one per target in a
    process), so that the kernel picks a worker for it anew."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def fresh_aio_channel(target: str) -> grpc.aio.Channel:
    """The asyncio form of ``fresh_channel``."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _json_objects(line: str) -> list[Event]:
    """The JSON log objects in ``line``, wherever they start (text around them is skipped)."""
    decoder = json.JSONDecoder()
    found: list[Event] = []
    start = line.find('{"')
    while start >= 0:
        try:
            value, end = decoder.raw_decode(line, start)
        except json.JSONDecodeError:
            start = line.find('{"', start + 1)
            continue
        if isinstance(value, dict) and "event" in value:
            found.append(value)
        start = line.find('{"', end)
    return found
