"""SIGTERM drain attacked with other signals and a Redis that comes and goes: no call is lost
or answered wrongly, and health never says SERVING again once the drain began."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import DecisionCase, lending_cases
from tests.conftest import POLICIES
from tests.processes import free_port
from tests.redis_support import RedisProcess
from verdict.client import VerdictClient

ALLOW_CASE = next(c for c in lending_cases() if c.expect == "allow")
DENY_CASE = next(c for c in lending_cases() if c.expect == "deny")
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Served:
    """One `verdict serve --workers 1` on Redis, and the file its log goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def logged(self, event: str) -> bool:
        return f'"event": "{event}"' in self.log.read_text(errors="replace")


def load_lending(redis: RedisProcess) -> None:
    """The lending store's entities.json into ``redis``, through the real CLI."""
    subprocess.run(
        [
            *(sys.executable, "-m", "verdict", "entities", "load", "--stores", str(POLICIES)),
            *("--store", "lending", "--redis-url", redis.url),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def served_on(redis: RedisProcess, workdir: Path, **env: str) -> Iterator[Served]:
    """A ready server on ``redis`` with the sample stores (VERDICT_* ``env`` added)."""
    port = free_port()
    log = workdir / "serve.log"
    command = [sys.executable, "-m", "verdict", "serve", "--stores", str(POLICIES)]
    command += ["--default-store", "lending", "--listen", f"127.0.0.1:{port}", "--workers", "1"]
    command += ["--redis-url", redis.url, "--log-format", "json"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stderr=sink, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and '"server_started"' in log.read_text(errors="replace")):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "verdict serve did not start"
            time.sleep(0.05)
        yield Served(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def decide(port: int, case: DecisionCase, answers: list[object]) -> None:
    """One decision on a fresh client; its decision number or the gRPC status name."""
    with VerdictClient(f"127.0.0.1:{port}", timeout=20, retries=0) as client:
        try:
            reply = client.is_authorized(
                case.principal, case.action, case.resource, context=case.context
            )
            answers.append(reply.decision)
        except grpc.RpcError as error:
            answers.append(error.code().name)


def test_sighup_while_stopping_does_not_kill_the_server(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """SIGTERM, then SIGHUP while a call is still in flight (the supervisor forwards SIGHUP to
    every worker it still counts as ready, and `kill -HUP` reaches any process): the server
    must finish the call and exit 0. The SIGHUP handler used to be removed first thing in
    ``stop``, which restored the default action: SIGHUP then killed the process in the middle
    of its grace, cutting the call off and dropping the audit records not yet written."""
    load_lending(redis)
    assert redis.process is not None
    env = {"VERDICT_CACHE_MAX_ENTRIES": "0", "VERDICT_REDIS_TIMEOUT_SECONDS": "3"}
    env |= {"VERDICT_REDIS_RETRIES": "0", "VERDICT_SHUTDOWN_GRACE_SECONDS": "20"}
    with served_on(redis, tmp_path, **env) as served:
        answers: list[object] = []
        decide(served.port, ALLOW_CASE, answers)
        assert answers == [1]
        os.kill(redis.process.pid, signal.SIGSTOP)  # the next call waits on Redis
        try:
            caller = threading.Thread(target=decide, args=(served.port, ALLOW_CASE, answers))
            caller.start()
            time.sleep(0.3)  # the call reaches Redis (ordering only; nothing timed is asserted)
            served.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not served.logged("shutdown_started"):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.3)  # inside stop(), waiting for the call
            served.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        caller.join(30)
        code = served.process.wait(30)
    assert code == 0, f"exit {code}"
    # The call in flight got an answer from the server (a decision or a fail-closed error),
    # never a connection cut off by a dying process.
    assert answers[1] in (1, "UNAVAILABLE"), answers


def health_of(port: int, name: str = "") -> int:
    """The health status the server reports for ``name`` (a fresh channel each time)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status)


def test_health_stays_not_serving_through_a_drain_when_redis_returns_and_policies_reload(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """During a drain the health monitor keeps polling and SIGHUP still reloads the policies;
    neither may turn any health name back to SERVING (a balancer would route to a server about
    to stop), and decisions during the drain stay correct: Redis down then back up, a reload,
    then ALLOW and DENY answered as stored."""
    load_lending(redis)
    assert redis.process is not None
    env = {"VERDICT_SHUTDOWN_DRAIN_SECONDS": "120", "VERDICT_HEALTH_INTERVAL_SECONDS": "0.05"}
    env |= {"VERDICT_REDIS_TIMEOUT_SECONDS": "0.2", "VERDICT_CACHE_GRACE_SECONDS": "0.3"}
    names = ["", "verdict.v1.AuthorizationService", "store/lending"]
    with served_on(redis, tmp_path, **env) as served:
        assert all(health_of(served.port, n) == SERVING for n in names)
        served.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while health_of(served.port) == SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Redis goes away (the monitor reports it) and comes back (the monitor would report
        # SERVING again), then a reload swaps the policies (its hook re-checks health).
        os.kill(redis.process.pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(redis.process.pid, signal.SIGCONT)
        served.process.send_signal(signal.SIGHUP)
        seen = set()
        for _ in range(20):
            seen |= {health_of(served.port, n) for n in names}
            time.sleep(0.05)
        assert SERVING not in seen
        answers: list[object] = []
        decide(served.port, ALLOW_CASE, answers)
        decide(served.port, DENY_CASE, answers)
        assert answers == [1, 2]
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` now (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return {int(p) for p in path.read_text().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    """Whether ``pid`` is still a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("phase", [0.1, 1.2], ids=["loading", "waiting-on-redis"])
def test_sigterm_while_workers_start_stops_everything_cleanly(
    redis: RedisProcess, phase: float
) -> None:
    """SIGTERM to the supervisor while its first worker is still starting (``phase`` seconds
    after it was spawned: still importing and loading policies, or waiting on a stopped Redis
    in its first call): the supervisor exits 0 and leaves no worker behind."""
    load_lending(redis)
    assert redis.process is not None
    port = free_port()
    command = [sys.executable, "-m", "verdict", "serve", "--stores", str(POLICIES)]
    command += ["--default-store", "lending", "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    command += ["--redis-url", redis.url]
    env = {**os.environ, "VERDICT_REDIS_TIMEOUT_SECONDS": "2", "VERDICT_REDIS_RETRIES": "0"}
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        supervisor = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (workers := children(supervisor.pid)):
                assert supervisor.poll() is None
                assert time.monotonic() < deadline, "no worker started"
                time.sleep(0.01)
            time.sleep(phase)  # where the worker is in its start (order only)
            supervisor.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            os.kill(redis.process.pid, signal.SIGCONT)
            code = supervisor.wait(60)
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait(10)
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    assert code == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)
