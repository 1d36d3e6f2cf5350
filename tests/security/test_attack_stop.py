"""Attack on the stop sequence (SIGTERM, the drain, `--workers N`): what a hostile or careless
caller, or an operator's extra signals, can make a stopping server lose, allow, hang on, or exit
with. Real `verdict serve` processes and real redis-server processes on loopback throughout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.processes import free_port
from tests.redis_support import RedisProcess
from tests.security.test_attack_drain_signals import load_lending
from tests.security.test_attack_round3 import ALLOW_REQUEST, Served, _admitted, serving
from tests.workers_support import alive, fresh_channel, verdict_workers, wait_until
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import VerdictClient, build_request
from verdict.model import EntityUid
from verdict.store.redis_keys import DEFAULT_LAYOUT, uid_key

KEYS = DEFAULT_LAYOUT.store("lending")
OLIVIA = EntityUid("Employee", "olivia")
OLIVIA_ATTRS = {
    "name": "Olivia Ortiz",
    "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
    "department": "Retail Lending",
    "approval_limit": 0,
    "suspended": False,
}
# A partner has no parents: its write reads nothing first and goes straight to the Redis script.
CUT_PARTNER = {
    "uid": {"type": "Partner", "id": "cut-partner"},
    "attrs": {"name": "Cut Partner", "kind": "bank", "active": True},
    "parents": [],
}


def olivia(suspended: bool) -> dict[str, object]:
    """Olivia as stored, suspended or not."""
    return {
        "uid": {"type": "Employee", "id": "olivia"},
        "attrs": {**OLIVIA_ATTRS, "suspended": suspended},
        "parents": [{"type": "Role", "id": "loan_officer"}],
    }


def olivia_view(min_entity_version: int = 0) -> pb.IsAuthorizedRequest:
    """Olivia views loan-1001: ALLOW while she is not suspended."""
    return build_request(
        "Employee::olivia",
        "Action::view",
        "Loan::loan-1001",
        context=BASE_CONTEXT,
        min_entity_version=min_entity_version,
    )


def signal_until_exit(
    process: subprocess.Popen[bytes], sig: signal.Signals, within: float = 20
) -> int | None:
    """SIGTERM, then ``sig`` every 5 ms until ``process`` exits (as a preStop loop, a process
    manager repeating its signal, or a supervisor forwarding would): its exit code, or None
    if it still ran after ``within`` seconds."""
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            break
    try:
        return process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def no_traceback(log: Path) -> None:
    """Nothing in ``log`` says an exception escaped."""
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


# --- (d) exit codes: signals that arrive once the stop is done --------------------------------


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda sig: sig.name
)
def test_signals_repeated_through_the_stop_never_kill_the_process(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM, then ``sig`` again and again until the process is gone. Every signal before the
    end is handled (SIGTERM/SIGINT cut the drain short, SIGHUP is ignored during the stop), but
    asyncio's loop.close() restores SIG_DFL (default_int_handler for SIGINT): one that lands
    between the loop's close and the interpreter's exit killed the process, which an
    orchestrator records as a crash (and a supervisor turned into exit 1, see below). Fixed:
    once the main coroutine is over the stop signals go straight from the loop's handler to
    SIG_IGN and stay there through the loop's close (event_loop._StopSignalsStayIgnored)."""
    with serving(tmp_path, env={"VERDICT_SHUTDOWN_GRACE_SECONDS": "2"}) as served:
        code = signal_until_exit(served.process, sig)
        assert served.events("shutdown_finished"), "the stop itself did not finish"
    assert code == 0, f"exit {code}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name)
def test_a_supervisor_signalled_repeatedly_drains_its_workers_and_exits_zero(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """`--workers 2`, SIGTERM then ``sig`` every 5 ms until the supervisor exits: it must exit
    0, report every worker exiting 0, leave no worker running and remove its metrics folder
    (its TMPDIR is ``tmp_path`` here)."""
    env = {"VERDICT_SHUTDOWN_GRACE_SECONDS": "2"}
    with verdict_workers(tmp_path, env=env) as served:
        pids = list(served.worker_pids().values())
        code = signal_until_exit(served.process, sig, within=30)
        finished = [e for e in served.events("shutdown_finished") if "exit_codes" in e]
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 15), "a worker outlived it"
    leftovers = sorted(p.name for p in tmp_path.glob("verdict-metrics-*"))
    assert (code, [e["exit_codes"] for e in finished], leftovers) == (0, [[0, 0]], [])


# --- (a) an entity write cut by the stop -------------------------------------------------------


def _entity_state(redis: RedisProcess) -> tuple[str, str, str]:
    """The store's version and whether olivia and the cut partner are stored."""
    partner = uid_key(EntityUid("Partner", "cut-partner"))
    return (
        redis.cli("GET", KEYS.version).strip(),
        redis.cli("HEXISTS", KEYS.entities, uid_key(OLIVIA)).strip(),
        redis.cli("HEXISTS", KEYS.entities, partner).strip(),
    )


def _write_status(target: str, write: Callable[[VerdictClient], object]) -> str:
    """``write`` on a fresh client without retries: "OK" or the status and its details."""
    with VerdictClient(target, timeout=30, retries=0) as client:
        try:
            write(client)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
        return "OK"


@pytest.mark.parametrize("write", ["put", "delete"])
def test_an_entity_write_cut_by_the_stop_is_applied_wholly_or_not_at_all(
    redis: RedisProcess, tmp_path: Path, write: str
) -> None:
    """A PutEntities (a partner: no ancestors to read first) or a DeleteEntities (olivia) sent
    while Redis is stalled (SIGSTOP), then SIGTERM with a 1 s grace. grpc cuts the call at the
    end of the grace (UNAVAILABLE, "Cancelling all calls") while its script may already sit in
    Redis's socket: like any write whose answer was lost, its outcome is unknown to the caller,
    and Redis runs it when it resumes (attack on the stop, finding 3; docs/security.md says so:
    read back before acting). What must hold: the write lands wholly (entity and version
    together) or not at all, never in part, and the process exits 0."""
    assert redis.process is not None
    load_lending(redis)
    before = _entity_state(redis)
    env = {"VERDICT_CACHE_MAX_ENTRIES": "0", "VERDICT_REDIS_TIMEOUT_SECONDS": "10"}
    env |= {"VERDICT_REDIS_RETRIES": "0", "VERDICT_SHUTDOWN_GRACE_SECONDS": "1"}
    metrics_port = free_port()
    args = ("--redis-url", redis.url, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    calls: dict[str, Callable[[VerdictClient], object]] = {
        "put": lambda client: client.put_entities([CUT_PARTNER]),
        "delete": lambda client: client.delete_entities(['Employee::"olivia"']),
    }
    answers: list[str] = []
    with serving(tmp_path, *args, env=env) as served:
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            caller = threading.Thread(
                target=lambda: answers.append(_write_status(served.target, calls[write]))
            )
            caller.start()
            assert wait_until(lambda: _admitted(metrics_port) >= 1, 10), "never admitted"
            time.sleep(0.3)  # the script is on its way to Redis (ordering only)
            served.process.send_signal(signal.SIGTERM)
            code = served.process.wait(15)
            caller.join(15)
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        time.sleep(0.5)  # Redis runs what it was sent meanwhile
    after = _entity_state(redis)
    assert code == 0
    assert len(answers) == 1
    # (the version moved, olivia stored, the partner stored): a write's version is new and
    # not before's plus one (versions are numbered from the load's clock).
    olivia, partner = before[1:]
    seen = (after[0] != before[0], *after[1:])
    applied = (True, olivia, "1") if write == "put" else (True, "0", partner)
    if answers[0] == "OK":
        assert seen == applied
    else:
        assert seen in ((False, *before[1:]), applied), f"{answers[0]!r}: {before} -> {after}"


# --- (c) hangs ---------------------------------------------------------------------------------


def _bulk_write() -> epb.PutEntitiesRequest:
    """A 3.9 MB PutEntities (within max_message_bytes, 300 values per entity: within every
    limit the parse checks), whose parse takes ~3 s of Python in a worker thread."""
    entities = [
        {"uid": {"type": "Partner", "id": f"bulk-{i}"}, "attrs": {"tags": [[0]] * 300}}
        for i in range(2490)
    ]
    return epb.PutEntitiesRequest(policy_store_id="lending", entities_json=json.dumps(entities))


def exit_code_within(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The process's exit code once it exits, or None if it is still running after ``seconds``."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def test_bulk_writes_in_flight_do_not_hold_the_exit_past_the_grace(tmp_path: Path) -> None:
    """A careless bulk loader (or a hostile writer) has two big writes in flight when SIGTERM
    arrives. The stop waits the grace for them, then cuts them; the process must exit within
    the grace and a few seconds, not once their (abandoned) parse threads are done."""
    request = _bulk_write()
    grace = 1.0
    with serving(tmp_path, env={"VERDICT_SHUTDOWN_GRACE_SECONDS": str(grace)}) as served:

        def put() -> None:
            # Cut by the stop: what is measured is the exit.
            with fresh_channel(served.target) as channel, contextlib.suppress(grpc.RpcError):
                epb_grpc.EntityServiceStub(channel).PutEntities(request, timeout=60)

        writers = [threading.Thread(target=put, daemon=True) for _ in range(2)]
        for writer in writers:
            writer.start()
        time.sleep(0.5)  # both requests arrived and are being parsed (ordering only)
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = exit_code_within(served.process, grace + 15)
        took = time.monotonic() - started
        for writer in writers:
            writer.join(10)
    assert code == 0
    assert took < grace + 3, f"exit {took:.1f} s after SIGTERM (grace {grace} s)"


def test_sigterm_then_sigint_with_redis_stopped_exits_within_the_grace(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Redis is SIGSTOPped with five decisions waiting on it, the audit log writes to a Redis
    stream, the invalidation listener and the health monitor are connected: SIGTERM, then
    SIGINT mid-grace. Nothing of the stop (listener, monitor, audit close, pool close) may
    wait on the stalled Redis: exit 0 within the grace and a few seconds, no traceback."""
    assert redis.process is not None
    load_lending(redis)
    grace = 2.0
    env = {"VERDICT_CACHE_MAX_ENTRIES": "0", "VERDICT_REDIS_TIMEOUT_SECONDS": "30"}
    env |= {"VERDICT_AUDIT_SINK": "redis", "VERDICT_SHUTDOWN_GRACE_SECONDS": str(grace)}
    env |= {"VERDICT_HEALTH_INTERVAL_SECONDS": "0.1"}
    with serving(tmp_path, "--redis-url", redis.url, env=env) as served:
        with VerdictClient(served.target, timeout=10, retries=0) as client:
            assert client.send(ALLOW_REQUEST).decision == pb.DECISION_ALLOW
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            callers = [threading.Thread(target=_decide_quietly, args=(served,)) for _ in range(5)]
            for caller in callers:
                caller.start()
            time.sleep(0.5)  # the decisions wait on Redis (ordering only)
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            served.process.send_signal(signal.SIGINT)
            code = exit_code_within(served.process, grace + 10)
            took = time.monotonic() - started
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        for caller in callers:
            caller.join(15)
    assert code == 0
    assert took < grace + 3, f"exit {took:.1f} s after SIGTERM"
    no_traceback(served.log)


def _decide_quietly(served: Served) -> None:
    with (
        VerdictClient(served.target, timeout=30, retries=0) as client,
        contextlib.suppress(grpc.RpcError),
    ):
        client.send(ALLOW_REQUEST)


def test_a_flood_of_new_connections_during_the_drain_does_not_hold_the_stop(
    tmp_path: Path,
) -> None:
    """Through a 1.5 s drain and the stop, callers keep opening connections: 150 TCP
    connections that send the HTTP/2 preface and nothing else, and four closed loops of fresh
    channels each making one decision. The drain ends on time, the stop is not held by any of
    it: exit 0 within drain + grace + a few seconds, no traceback."""
    drain, grace = 1.5, 2.0
    env = {"VERDICT_SHUTDOWN_DRAIN_SECONDS": str(drain)}
    env |= {"VERDICT_SHUTDOWN_GRACE_SECONDS": str(grace)}
    stop = threading.Event()
    with serving(tmp_path, env=env) as served:

        def fresh_decisions() -> None:
            while not stop.is_set():
                with fresh_channel(served.target) as channel:
                    try:
                        pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                            ALLOW_REQUEST, timeout=2
                        )
                    except grpc.RpcError:
                        time.sleep(0.01)

        held: list[socket.socket] = []

        def half_open() -> None:
            while not stop.is_set() and len(held) < 150:
                try:
                    sock = socket.create_connection(("127.0.0.1", served.port), timeout=2)
                    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    held.append(sock)
                except OSError:
                    time.sleep(0.01)

        loops = [threading.Thread(target=fresh_decisions, daemon=True) for _ in range(4)]
        loops.append(threading.Thread(target=half_open, daemon=True))
        try:
            for loop in loops:
                loop.start()
            time.sleep(0.3)
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            try:
                code: int | None = served.process.wait(drain + grace + 10)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - started
        finally:
            stop.set()
            for loop in loops:
                loop.join(10)
            for sock in held:
                sock.close()
    assert code == 0
    assert drain <= took < drain + grace + 3, f"exit {took:.1f} s after SIGTERM"
    no_traceback(served.log)


# --- (b) and (e): a suspension during a drain of two workers ------------------------------------


def test_a_suspension_written_during_a_drain_denies_on_every_worker_and_all_exit(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """`--workers 2` on Redis with the entity cache warm on both workers. SIGTERM starts a long
    drain (both workers still serve). Olivia is suspended through one connection; decisions at
    the write's version on 12 fresh connections (spread over both workers by the kernel) must
    all DENY: neither worker may answer from the cache it had before the stop. A second
    SIGTERM cuts the drain short: the supervisor exits 0, every worker exits 0, none is left."""
    load_lending(redis)
    env = {"VERDICT_SHUTDOWN_DRAIN_SECONDS": "60", "VERDICT_SHUTDOWN_GRACE_SECONDS": "2"}
    with verdict_workers(tmp_path, "--redis-url", redis.url, env=env) as served:
        pids = list(served.worker_pids().values())
        for _ in range(12):  # both workers' caches hold olivia, unsuspended
            with fresh_channel(served.target) as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                assert stub.IsAuthorized(olivia_view(), timeout=10).decision == pb.DECISION_ALLOW
        served.process.send_signal(signal.SIGTERM)

        def both_draining() -> bool:
            return len([e for e in served.events("shutdown_started") if "worker" in e]) == 2

        assert wait_until(both_draining, 15), "the workers never started their drain"
        with VerdictClient(served.target, timeout=10, retries=0) as client:
            version = client.put_entities([olivia(suspended=True)]).version
        decisions = []
        for _ in range(12):
            with fresh_channel(served.target) as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                decisions.append(stub.IsAuthorized(olivia_view(version), timeout=10).decision)
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(20)
        took = time.monotonic() - started
        finished = [e for e in served.events("shutdown_finished") if "exit_codes" in e]
    assert decisions == [pb.DECISION_DENY] * 12
    assert code == 0
    assert took < 2 + 3, f"exit {took:.1f} s after the second SIGTERM"
    assert [e["exit_codes"] for e in finished] == [[0, 0]]
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), "a worker outlived it"
    stored = json.loads(redis.cli("HGET", KEYS.entities, uid_key(OLIVIA)))
    assert stored["e"]["attrs"]["suspended"] is True
