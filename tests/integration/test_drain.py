"""SIGTERM for Kubernetes: health NOT_SERVING at once, the listener serving on through
``shutdown_drain_seconds``, so a balancer that stops on NOT_SERVING loses no call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import BASE_CONTEXT
from tests.processes import verdict_server
from tests.workers_support import Event, Supervised, fresh_channel, verdict_workers, wait_until
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.transport.overload import SHUTTING_DOWN_MESSAGE

OLIVIA_VIEW = build_request(
    "Employee::olivia", "Action::view", "Loan::loan-1001", context=BASE_CONTEXT
)
CALLERS = 4
# How long the balancer keeps routing after it saw NOT_SERVING (endpoint propagation in
# Kubernetes); the drain below is longer, so nothing may fail.
PROPAGATION_SECONDS = 0.5
MAX_CALLS = 20_000  # bounds the load whatever happens


@dataclass
class Balancer:
    """Callers that send decisions until PROPAGATION_SECONDS after health said NOT_SERVING
    (or health stopped answering), as a Kubernetes Service or a health-checking client would."""

    target: str
    removed_at: float | None = None
    answered: int = 0
    answered_after_removal: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0

    def routing(self) -> bool:
        with self.lock:
            if self.sent >= MAX_CALLS:
                return False
            self.sent += 1
        return self.removed_at is None or time.monotonic() < self.removed_at + PROPAGATION_SECONDS

    def call(self) -> None:
        with fresh_channel(self.target) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            while self.routing():
                try:
                    reply = stub.IsAuthorized(OLIVIA_VIEW, timeout=10)
                except grpc.RpcError as exc:
                    with self.lock:
                        self.failed.append(exc.code().name)
                    continue
                assert reply.decision == pb.DECISION_ALLOW
                with self.lock:
                    self.answered += 1
                    self.answered_after_removal += self.removed_at is not None

    def watch_health(self) -> None:
        with fresh_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError:
                    status = health_pb2.HealthCheckResponse.NOT_SERVING
                if status != health_pb2.HealthCheckResponse.SERVING:
                    self.removed_at = time.monotonic()
                    return
                time.sleep(0.02)


def not_serving(channel: grpc.Channel) -> bool:
    """Whether the server behind ``channel`` reports NOT_SERVING (it still answers)."""
    stub = health_pb2_grpc.HealthStub(channel)
    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    return bool(status == health_pb2.HealthCheckResponse.NOT_SERVING)


def terminate_under_load(served: Supervised) -> Balancer:
    """Load the server, SIGTERM it once the callers are busy, run until they stopped."""
    balancer = Balancer(served.target)
    callers = [threading.Thread(target=balancer.call) for _ in range(CALLERS)]
    watcher = threading.Thread(target=balancer.watch_health)
    for thread in [*callers, watcher]:
        thread.start()
    while balancer.answered < 50 and not balancer.failed and balancer.sent < MAX_CALLS:
        time.sleep(0.01)
    served.process.send_signal(signal.SIGTERM)
    for thread in [watcher, *callers]:
        thread.join(90)
    return balancer


def test_a_drained_server_loses_no_call_of_a_balancer_that_follows_health(
    tmp_path: Path,
) -> None:
    """Two workers, a 3 s drain: health turns NOT_SERVING at once, calls sent meanwhile are
    answered, the listener closes only after the balancer stopped sending, exit 0."""
    with verdict_workers(tmp_path, "--shutdown-drain-seconds", "3") as served:
        balancer = terminate_under_load(served)
        assert served.process.wait(60) == 0
    assert balancer.removed_at is not None
    assert balancer.failed == []
    assert balancer.answered > 50
    assert balancer.answered_after_removal > 0  # the listener served on through the drain
    assert len(served.events("drain_finished")) == 2  # each worker drained


def test_without_a_drain_the_same_balancer_sees_refused_calls(tmp_path: Path) -> None:
    """The contrast that shows the test above can fail: with no drain (the default) the
    listener closes at once and calls routed during the propagation delay fail."""
    with verdict_workers(tmp_path) as served:
        balancer = terminate_under_load(served)
        assert served.process.wait(60) == 0
    assert balancer.failed
    assert set(balancer.failed) <= {"UNAVAILABLE", "CANCELLED"}


def test_a_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    """A 120 s drain ends when another SIGTERM arrives (an operator in a hurry, a kubelet
    past its grace); the server then stops as usual and exits 0."""
    with verdict_workers(tmp_path, "--shutdown-drain-seconds", "120") as served:
        served.process.send_signal(signal.SIGTERM)
        # Both workers draining before the second signal: two SIGTERMs that reach a worker
        # before its loop has run the first handler are one (Unix signals do not queue), and
        # that worker then drains the full 120 s (a make test run under load hit it).
        assert wait_until(lambda: len(worker_drains(served)) == 2)
        for _ in range(4):  # fresh connections reach either worker: each serves, not ready
            with fresh_channel(served.target) as channel:
                assert wait_until(lambda: not_serving(channel))
                stub = pb_grpc.AuthorizationServiceStub(channel)
                assert stub.IsAuthorized(OLIVIA_VIEW, timeout=5).decision == pb.DECISION_ALLOW
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
    assert len(served.events("drain_finished")) == 2


def worker_drains(served: Supervised) -> list[Event]:
    """The workers' shutdown_started lines (the supervisor's has no drain_seconds)."""
    return [e for e in served.events("shutdown_started") if "drain_seconds" in e]


def test_one_process_drains_the_same_way() -> None:
    """`--workers 1` (no supervisor): NOT_SERVING while still answering, a second SIGTERM ends
    the drain, exit 0."""
    with verdict_server("--shutdown-drain-seconds", "120") as served:
        served.process.send_signal(signal.SIGTERM)
        with fresh_channel(f"127.0.0.1:{served.port}") as channel:
            assert wait_until(lambda: not_serving(channel))
            stub = pb_grpc.AuthorizationServiceStub(channel)
            assert stub.IsAuthorized(OLIVIA_VIEW, timeout=5).decision == pb.DECISION_ALLOW
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
    assert "drain_finished" in served.stderr


@dataclass(frozen=True)
class Call:
    started: float
    ended: float
    code: str
    details: str


async def _saturate_then_terminate(target: str, process: subprocess.Popen[str]) -> list[Call]:
    """16 closed-loop callers on one connection keep calls queued in grpc core (one process,
    CPU-bound decisions); SIGTERM once 200 were answered; every call recorded."""
    calls: list[Call] = []
    stop, busy = asyncio.Event(), asyncio.Event()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)

        async def caller() -> None:
            while not stop.is_set() and len(calls) < MAX_CALLS:
                started = time.monotonic()
                try:
                    await stub.IsAuthorized(OLIVIA_VIEW, timeout=10)
                    code, details = "OK", ""
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                calls.append(Call(started, time.monotonic(), code, details))
                if len(calls) >= 200:
                    busy.set()
                if code != "OK":
                    await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(caller()) for _ in range(16)]
        await asyncio.wait_for(busy.wait(), 30)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        stop.set()
        await asyncio.gather(*tasks)
    return [c for c in calls if c.started < signalled < c.ended]


def test_calls_queued_in_grpc_core_at_sigterm_are_refused_retryably_never_cancelled() -> None:
    """grpc.aio takes calls from core one at a time, so under load calls wait in core, and
    core's shutdown cancels them (12 of 16 in flight came back CANCELLED before the fix). The
    server first takes and refuses them as UNAVAILABLE, which callers retry; none is lost."""
    for _ in range(2):
        with verdict_server() as served:
            in_flight = asyncio.run(
                _saturate_then_terminate(f"127.0.0.1:{served.port}", served.process)
            )
            assert served.process.wait(30) == 0
        assert len(in_flight) == 16  # every caller had a call out when the signal came
        assert {c.code for c in in_flight} <= {"OK", "UNAVAILABLE"}, in_flight
        refused = [c for c in in_flight if c.code == "UNAVAILABLE"]
        assert all(c.details == SHUTTING_DOWN_MESSAGE for c in refused)
