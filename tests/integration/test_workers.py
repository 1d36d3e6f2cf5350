"""`verdict serve --workers N`: real worker processes on one port, their supervisor, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.faults.proxy import FaultProxy
from tests.integration.redis_apps import UMA_VIEW, redis_app
from tests.redis_support import RedisProcess
from tests.stores import write_store
from tests.workers_support import (
    alive,
    fresh_aio_channel,
    fresh_channel,
    serve_command,
    verdict_workers,
    wait_until,
)
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import build_request

CALLS = "verdict_worker_calls_total"
REFUSED = "verdict_calls_refused_total"
CONNECTIONS = 24  # all on one worker by chance: 2 ** -23
OLIVIA_VIEW = build_request(
    "Employee::olivia", "Action::view", "Loan::loan-1001", context=BASE_CONTEXT
)
UMA_ALLOW = build_request(
    UMA_VIEW.principal, UMA_VIEW.action, UMA_VIEW.resource, context=UMA_VIEW.context
)
WRITE = epb.PutEntitiesRequest(
    policy_store_id="lending",
    entities_json=json.dumps([{"uid": {"type": "Partner", "id": "p"}, "attrs": {}, "parents": []}]),
)


def decide_on_fresh_connections(target: str, count: int) -> None:
    """``count`` IsAuthorized calls, each on its own connection; each must ALLOW."""
    for _ in range(count):
        with fresh_channel(target) as channel:
            reply = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(OLIVIA_VIEW, timeout=10)
            assert reply.decision == pb.DECISION_ALLOW


def test_workers_share_one_port_answer_and_their_counters_add_up(tmp_path: Path) -> None:
    """Two workers (distinct pids) serve one port chosen for both; connections land on each;
    /metrics sums every worker's counters; the in-memory store refuses writes with the reason
    while reads and decisions go on; a second multi-worker server on the port fails fast."""
    with verdict_workers(tmp_path) as served:
        pids = served.worker_pids()
        assert sorted(pids) == [0, 1]
        assert len(set(pids.values())) == 2
        assert {e["port"] for e in served.events("server_started")} == {served.port}
        decide_on_fresh_connections(served.target, CONNECTIONS)
        per_worker = [served.metric(CALLS, worker=str(i)) for i in (0, 1)]
        assert all(count > 0 for count in per_worker), per_worker
        assert sum(per_worker) == CONNECTIONS
        for _ in range(CONNECTIONS):
            with fresh_channel(served.target) as channel:
                entities = epb_grpc.EntityServiceStub(channel)
                with pytest.raises(grpc.RpcError) as refused:
                    entities.PutEntities(WRITE, timeout=10)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert refused.value.details() == (
                    "entity writes need Redis when serving with more than one worker"
                )
                got = entities.GetEntities(
                    epb.GetEntitiesRequest(
                        policy_store_id="lending", uids=[pb.EntityUid(type="Employee", id="uma")]
                    ),
                    timeout=10,
                )
                assert not got.missing
        assert served.metric(REFUSED, reason="writes_refused") == CONNECTIONS
        assert sum(served.metric(CALLS, worker=str(i)) for i in (0, 1)) == 3 * CONNECTIONS
        second = subprocess.run(
            serve_command("--workers", "2", "--listen", served.target),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        assert f"cannot listen on {served.target}: address already in use" in second.stderr
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0
    assert len(served.events("shutdown_finished")) == 3  # each worker, then the supervisor
    assert not any(alive(pid) for pid in pids.values())


def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(tmp_path: Path) -> None:
    """SIGKILL one worker: the supervisor starts a new one in its place (a new pid, same
    index), decisions never stop, and SIGTERM still drains everything to exit 0."""
    with verdict_workers(tmp_path) as served:
        killed = served.worker_pids()[1]
        os.kill(killed, signal.SIGKILL)
        served.wait_for("worker_restarting")
        decide_on_fresh_connections(served.target, 4)  # the other worker takes them all
        served.wait_for("worker_ready", count=3)
        replacement = served.worker_pids()[1]
        assert replacement != killed
        assert alive(replacement)
        exited = served.events("worker_exited")[0]
        assert (exited["worker"], exited["pid"], exited["exit_code"]) == (1, killed, -9)
        decide_on_fresh_connections(served.target, CONNECTIONS)
        assert served.metric(CALLS, worker="1") > 0  # the new worker serves
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0


def test_out_of_restarts_the_supervisor_stops_every_worker_and_fails(tmp_path: Path) -> None:
    """With worker_restarts = 0 a worker's crash stops the others and the supervisor exits 1."""
    with verdict_workers(tmp_path, env={"VERDICT_WORKER_RESTARTS": "0"}) as served:
        pids = served.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        assert served.process.wait(30) == 1
        assert served.events("worker_restarts_exhausted")
        assert wait_until(lambda: not alive(pids[1]))


def test_workers_die_with_their_supervisor(tmp_path: Path) -> None:
    """SIGKILL the supervisor: no worker is left behind serving the port."""
    with verdict_workers(tmp_path) as served:
        pids = served.worker_pids()
        served.process.kill()
        served.process.wait(10)
        assert wait_until(lambda: not any(alive(pid) for pid in pids.values()))


def test_startup_errors_stop_the_workers_at_once(tmp_path: Path) -> None:
    """A broken store or a port in use: exit 2 with the reason, said once, and nothing runs."""
    write_store(tmp_path, "s", {"p.cedar": "permit(principal, action, resource"})
    broken = subprocess.run(
        serve_command("--workers", "2", "--listen", "127.0.0.1:0", stores=tmp_path, default="s"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert broken.returncode == 2
    assert broken.stderr.count("cannot load policy stores") == 1
    assert "s/p.cedar:1:" in broken.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = subprocess.run(
            serve_command("--workers", "2", "--listen", listen),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert busy.returncode == 2
    assert f"cannot listen on {listen}: address already in use" in busy.stderr


async def test_sigterm_drains_every_worker_with_calls_in_flight(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """SIGTERM while every worker holds calls waiting on a slowed Redis: each call is answered
    (zero failed), every worker reports its drain, and the supervisor exits 0."""
    async with redis_app(redis.url):
        pass  # loads the lending entities into Redis
    proxy = FaultProxy(redis.port)
    await proxy.start()
    env = {
        "VERDICT_CACHE_MAX_ENTRIES": "0",  # every decision reads Redis
        "VERDICT_REDIS_TIMEOUT_SECONDS": "10",
        "VERDICT_SHUTDOWN_GRACE_SECONDS": "15",
    }
    # The proxy runs on this event loop: the blocking waits of the helper go to a thread.
    with contextlib.ExitStack() as stack:
        workers = verdict_workers(tmp_path, "--redis-url", proxy.url, env=env)
        served = await asyncio.to_thread(stack.enter_context, workers)
        try:
            channels = [fresh_aio_channel(served.target) for _ in range(CONNECTIONS)]
            stubs = [pb_grpc.AuthorizationServiceStub(c) for c in channels]
            for stub in stubs:  # connected, and Redis answers through the proxy
                reply = await stub.IsAuthorized(UMA_ALLOW, timeout=10)
                assert reply.decision == pb.DECISION_ALLOW
            before = [await asyncio.to_thread(served.metric, CALLS, worker=w) for w in "01"]
            proxy.latency = 1.0  # each call now waits a second on Redis

            async def decide(stub: Any) -> int:  # grpc's stubs type calls as sync
                reply = await stub.IsAuthorized(UMA_ALLOW, timeout=30)
                return int(reply.decision)

            calls = [asyncio.create_task(decide(s)) for s in stubs]

            def all_admitted() -> bool:
                return served.metric(CALLS) == sum(before) + CONNECTIONS

            assert await asyncio.to_thread(wait_until, all_admitted)
            for worker in (0, 1):  # every worker holds some of them
                admitted = await asyncio.to_thread(served.metric, CALLS, worker=str(worker))
                assert admitted > before[worker]
            served.process.send_signal(signal.SIGTERM)
            replies = await asyncio.gather(*calls, return_exceptions=True)
            assert replies == [pb.DECISION_ALLOW] * len(calls)
            assert await asyncio.to_thread(served.process.wait, 60) == 0
            for channel in channels:
                await channel.close()
        finally:
            await asyncio.to_thread(stack.close)
            await proxy.stop()
    drained = [e for e in served.events("shutdown_finished") if "worker" in e]
    assert sorted(e["worker"] for e in drained) == [0, 1]
