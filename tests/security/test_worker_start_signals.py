"""SIGHUP and SIGTERM sent to a worker from its first instant on: kept, never fatal.

A worker (`python -m verdict.worker`) spent ~0.5-0.9 s importing grpc, Cedar and the server
before it had handlers; a SIGHUP (a reload, `pkill -HUP`) or a SIGTERM in that window killed it
by the default action. Here a thread signals each worker every few milliseconds from the moment
the supervisor forks it, so that every phase of its start gets signals: the fork, the
interpreter's start, the imports, the load and its first moments serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.security.test_attack_drain_signals import children
from tests.security.test_attack_round3 import ALLOW_REQUEST
from tests.security.test_attack_round5 import server
from tests.security.test_attack_stop import exit_code_within
from tests.stores import lending_copy
from tests.workers_support import Supervised, alive
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc

EVERY = 0.002  # seconds between two signals to one worker
# What the supervisor logs when a worker did not get to serve.
CASUALTIES = ("worker_interrupted_while_starting", "worker_exited", "worker_failed_to_start")


class Hammer(threading.Thread):
    """Sends ``sig`` every EVERY seconds to each child of ``parent`` that ``aimed`` picks (by
    its number in order of appearance: 0 is the first worker started), from the moment it
    appears until ``enough(pid)`` holds or it exits."""

    def __init__(
        self,
        parent: int,
        sig: signal.Signals,
        aimed: Callable[[int], bool],
        enough: Callable[[int], bool],
    ) -> None:
        super().__init__(daemon=True)
        self.parent, self.sig, self.aimed, self.enough = parent, sig, aimed, enough
        self.seen: list[int] = []
        self.sent: dict[int, int] = {}
        self._done: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.seen += sorted(children(self.parent) - set(self.seen))
            for number, pid in enumerate(self.seen):
                if pid in self._done or not self.aimed(number):
                    continue
                if self.enough(pid) or not alive(pid):
                    self._done.add(pid)
                    continue
                try:
                    os.kill(pid, self.sig)
                except ProcessLookupError:
                    continue
                self.sent[pid] = self.sent.get(pid, 0) + 1
            time.sleep(EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def ready_pids(supervised: Supervised) -> set[int]:
    return set(supervised.worker_pids().values())


def exit_codes(supervised: Supervised) -> list[int]:
    """The workers' exit codes, as the supervisor logged them when its stop finished."""
    (finished,) = [e for e in supervised.events("shutdown_finished") if "exit_codes" in e]
    codes: list[int] = finished["exit_codes"]
    return codes


def stop_supervisor(supervised: Supervised) -> None:
    """SIGTERM to the supervisor: it must exit 0 with every worker's exit code 0."""
    supervised.process.send_signal(signal.SIGTERM)
    assert exit_code_within(supervised.process, 30) == 0, supervised.log.read_text()[-3000:]
    codes = exit_codes(supervised)
    assert codes == [0] * len(codes)
    assert codes


def test_sighups_from_a_workers_first_instant_are_kept_and_reloaded(tmp_path: Path) -> None:
    """`--workers 2`; each worker gets SIGHUP every 2 ms from its fork until it serves. Neither
    may die of it: both start at the first attempt (no worker killed, restarted or failed),
    each reloads once it serves (the SIGHUP announced files its load may have read already),
    and both answer. The first SIGHUP killed worker 0 in its imports, and so did the next two
    at the supervisor's retries: the start failed, exit 1."""
    with server(lending_copy(tmp_path), "--workers", "2") as (process, port, log):
        supervised = Supervised(process, log)
        hammer = Hammer(
            process.pid, signal.SIGHUP, lambda _: True, lambda pid: pid in ready_pids(supervised)
        )
        hammer.start()
        try:
            supervised.wait_for("workers_started", within=60)
        finally:
            hammer.stop()
        assert not [e for name in CASUALTIES for e in supervised.events(name)]
        assert set(hammer.seen) == ready_pids(supervised)
        assert len(hammer.seen) == 2
        assert all(hammer.sent.get(pid, 0) > 1 for pid in hammer.seen), hammer.sent
        owed = supervised.events("policy_reload_requested")
        assert sorted(e["worker"] for e in owed) == [0, 1], owed
        assert all(e["trigger"] == "sighup" for e in owed)
        for _ in range(4):  # fresh connections: the kernel spreads them over both workers
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                assert stub.IsAuthorized(ALLOW_REQUEST, timeout=10).decision == pb.DECISION_ALLOW
        stop_supervisor(supervised)


def test_sigterms_to_starting_workers_stop_them_with_exit_0(tmp_path: Path) -> None:
    """`--workers 2`; the first two workers started (worker 0's first two attempts) get
    SIGTERM every 2 ms from their fork until they exit, as a stray `kill` would send. Each
    must exit 0, not die of it, and the supervisor start worker 0 again and serve (a stop is
    not something wrong with its settings). Both died of SIGTERM (-15)."""
    with server(lending_copy(tmp_path), "--workers", "2") as (process, _port, log):
        supervised = Supervised(process, log)
        hammer = Hammer(process.pid, signal.SIGTERM, lambda number: number < 2, lambda _: False)
        hammer.start()
        try:
            supervised.wait_for("workers_started", within=60)
        finally:
            hammer.stop()
        stopped = supervised.events("worker_interrupted_while_starting")
        assert [(e["worker"], e["attempt"], e["exit_code"]) for e in stopped] == [
            (0, 1, 0),
            (0, 2, 0),
        ], log.read_text()[-3000:]
        assert all(hammer.sent.get(pid, 0) >= 1 for pid in hammer.seen[:2]), hammer.sent
        assert ready_pids(supervised) == set(hammer.seen[2:4])
        assert not supervised.events("worker_exited")
        stop_supervisor(supervised)


def test_a_stop_forwarded_to_a_worker_from_its_first_instant_exits_0(tmp_path: Path) -> None:
    """SIGTERM to the supervisor as soon as it forks worker 0, and to that worker every 2 ms
    from its fork until it exits: the supervisor forwards the stop, and the worker, still
    starting, must exit 0. It died of SIGTERM (-15), which the supervisor forgave."""
    with server(lending_copy(tmp_path), "--workers", "2") as (process, _port, log):
        supervised = Supervised(process, log)
        hammer = Hammer(process.pid, signal.SIGTERM, lambda _: True, lambda _: False)
        hammer.start()
        try:
            deadline = time.monotonic() + 30
            while not hammer.seen:
                assert process.poll() is None
                assert time.monotonic() < deadline
                time.sleep(EVERY)
            process.send_signal(signal.SIGTERM)
            assert exit_code_within(process, 30) == 0, log.read_text()[-3000:]
        finally:
            hammer.stop()
    assert exit_codes(supervised) == [0]
    assert not supervised.events("worker_interrupted_while_starting")


def test_the_worker_entry_point_imports_nothing_heavy_before_its_handlers() -> None:
    """`python -m verdict.worker` sets its signal handlers once the `verdict` package and the
    entry point are imported: they must not import the server's modules (asyncio, grpc,
    Cedar, ...), whose ~0.5 s of imports was the window in which a signal killed a worker."""
    probe = (
        "import sys, verdict.worker; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio', 'grpc', 'cedarpy', 'redis', 'structlog', 'pydantic', 'google', "
        "'prometheus_client', 'uvloop'})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert loaded.stdout.strip() == ""


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("Linux only (/proc)")
