"""Attack round 5: stop signals at every phase, and policy store files around their size bounds
during hot reloads. Real `verdict serve` processes (or a real server in this process, driven
over gRPC as test_attack_lifecycle.py does) on loopback throughout.

Findings are tests asserting the correct behaviour; all six were fixed (docs/security.md, "Signals
at any moment" and "File versions are read like files").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.processes import free_port
from tests.security.authn_support import verdict_app
from tests.security.serve_process import serve_command, wait_serving
from tests.security.test_attack_drain_signals import children
from tests.security.test_attack_lifecycle import CHANGE, allowed_case, decide, reload
from tests.security.test_attack_round3 import ALLOW_REQUEST
from tests.security.test_attack_stop import exit_code_within
from tests.stores import lending_copy, sparse
from tests.workers_support import alive, wait_until
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc

TIB = 1 << 40


def slow_policies(count: int) -> str:
    """``count`` valid forbids that never match anyone in the lending store: loading (parse and
    strict validation) takes seconds, each file well within its 64 MiB bound."""
    return "".join(
        f'@id("slow-{i}")\nforbid (principal == Employee::"nobody-{i}", action, resource);\n'
        for i in range(count)
    )


@contextmanager
def server(
    stores: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`verdict serve` (one process unless ``args`` say otherwise) on ``stores``, JSON logs to a
    file; yields (process, port, log) without waiting for it to serve; killed after."""
    port = free_port()
    log = stores.parent / f"serve-{port}.log"
    command = serve_command(stores, port, "--log-format", "json", *args)
    if "--workers" not in args:
        command += ["--workers", "1"]
    environment = {**os.environ, "VERDICT_SHUTDOWN_GRACE_SECONDS": "1", **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stderr=sink, env=environment)
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


# --- Finding 1: a single-process server stopped while it loads its policies -------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda sig: sig.name)
def test_a_stop_signal_while_one_process_loads_its_policies_exits_zero_quietly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """`verdict serve --workers 1` (also what a 1-CPU container runs) on a store that takes
    seconds to load; SIGINT (Ctrl-C) or SIGTERM while it loads. Nothing is in flight: it must
    exit 0 without a traceback, as a worker does in the same phase (worker._exit_quietly) and
    as a supervisor does for SIGTERM while its workers start. As PID 1 in a container, the
    default action of SIGTERM is not even applied: the signal is lost and the pod serves on."""
    stores = lending_copy(tmp_path)
    (stores / "lending" / "slow.cedar").write_text(slow_policies(30_000))
    with server(stores) as (process, _, log):
        time.sleep(2.0)  # past the imports, parsing the policies (ordering only)
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        process.send_signal(sig)
        code = exit_code_within(process, 20)
    text = log.read_text(errors="replace")
    assert (code, "Traceback" in text) == (0, False), text[-2000:]


# --- Finding 2: SIGHUP to a worker that is still loading fails the whole start ------------------


def test_sighup_to_a_worker_while_it_loads_does_not_fail_the_start(tmp_path: Path) -> None:
    """`--workers 2`: SIGHUP (reload) sent to worker 0's pid as soon as it exists, while it
    imports and loads the policies (a reload sidecar, `pkill -HUP verdict`). It reads the
    newest files anyway: it must carry on, and the supervisor must serve. It died of the
    signal, and the supervisor exited 1: with a traceback (BrokenPipeError writing the order
    in _spawn, not WorkerFailed) when the worker died before reading it."""
    stores = lending_copy(tmp_path)
    with server(stores, "--workers", "2") as (process, port, log):
        deadline = time.monotonic() + 20
        while not (workers := children(process.pid)):
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for pid in workers:
            os.kill(pid, signal.SIGHUP)
        wait_serving(process, port, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                ALLOW_REQUEST, timeout=10
            )
        assert reply.decision == pb.DECISION_ALLOW


# --- Finding 3: entities.json is hashed whole before its bound is checked ------------------------


async def test_an_entities_file_far_past_its_bound_fails_the_reload_at_once(
    tmp_path: Path,
) -> None:
    """entities.json replaced by a 1 TiB sparse file (a link to a disk image, a runaway dump):
    the reload must fail at once naming the file and its bound, as for one byte past it; the
    last good version serves on. It hashed every byte first (~270 MB/s of zeros here)."""
    stores = lending_copy(tmp_path)
    entities = stores / "lending" / "entities.json"
    async with verdict_app(stores=stores, default_store="lending", policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            before = await decide(channel, allowed_case())
            sparse(entities, TIB)
            try:
                reply = await apb_grpc.AdminServiceStub(channel).ReloadPolicies(
                    apb.ReloadPoliciesRequest(), timeout=8
                )
            finally:
                os.truncate(entities, 0)  # ends the hash still running in the server's thread
                await reload(channel)  # waits for it (the reload lock)
            state = {s.policy_store_id: s for s in reply.stores}["lending"]
            assert state.change == CHANGE.FAILED
            assert [p.file for p in state.problems] == ["lending/entities.json"]
            after = await decide(channel, allowed_case())
    assert (after.decision, after.policy_version) == (pb.DECISION_ALLOW, before.policy_version)


def test_serve_refuses_an_entities_file_far_past_its_bound_at_once(tmp_path: Path) -> None:
    """`verdict serve` on a store whose entities.json is a 1 TiB sparse file: exit 2 naming
    the file and the bound at once, as for one byte past the bound."""
    stores = lending_copy(tmp_path)
    sparse(stores / "lending" / "entities.json", TIB)
    try:
        served = subprocess.run(
            serve_command(stores, free_port(), "--workers", "1"),
            capture_output=True,
            text=True,
            timeout=8,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("verdict serve was still hashing entities.json after 8 s")
    assert served.returncode == 2, served.stderr
    assert "lending/entities.json:0: invalid entities: larger than the limit of 512 MiB" in (
        served.stderr
    )


# --- Finding 4: entities.json swapped for a FIFO between is_file() and open() -----------------


async def test_an_entities_file_swapped_for_a_fifo_during_a_reload_does_not_block_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer swaps entities.json between a regular file and a FIFO (a broken sync job)
    while reloads run. Racing it for real (a loop swapping, reloads in a loop) blocked a
    reload within 0.3 to 7 s here; the test lands the swap right after the load's check that
    entities.json exists, as the race did (file_version checked, then opened blocking). The reload
    must answer (FAILED) and the last good version serve on; it blocked in open() for good
    (no writer ever comes), which also held the process's exit after SIGTERM."""
    stores = lending_copy(tmp_path)
    store = stores / "lending"
    entities = store / "entities.json"
    good = entities.read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    armed = threading.Event()
    real_lexists = os.path.lexists

    def exists_then_swap(path: Any) -> bool:
        found = real_lexists(path)
        if found and Path(path) == entities and armed.is_set():
            armed.clear()
            os.link(fifo, store / ".swap")
            os.replace(store / ".swap", entities)
        return found

    async with verdict_app(stores=stores, default_store="lending", policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            before = await decide(channel, allowed_case())
            entities.write_bytes(good + b"\n")  # a real change: the reload reads the store
            # The load asks whether entities.json exists through files.exists (lexists).
            monkeypatch.setattr(os.path, "lexists", exists_then_swap)
            armed.set()
            try:
                reply = await apb_grpc.AdminServiceStub(channel).ReloadPolicies(
                    apb.ReloadPoliciesRequest(), timeout=5
                )
            finally:
                monkeypatch.undo()
                # Release a reader blocked on the FIFO (it then reads an empty file).
                with contextlib.suppress(OSError):  # no reader blocked
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                (store / ".restore").write_bytes(good)
                os.replace(store / ".restore", entities)
                await reload(channel)
            state = {s.policy_store_id: s for s in reply.stores}["lending"]
            assert state.change == CHANGE.FAILED
            # Where the swap lands decides which check sees it first: the entities read
            # ("not a regular file") or the hash after the reads ("changed while being read").
            assert [p.file for p in state.problems] in (["lending/entities.json"], ["lending"])
            after = await decide(channel, allowed_case())
    assert (after.decision, after.policy_version) == (pb.DECISION_ALLOW, before.policy_version)


# --- Finding 5: SIGTERM during a slow hot reload waits for the reload -------------------------


def test_sigterm_during_a_slow_reload_exits_within_the_grace(tmp_path: Path) -> None:
    """A valid 80,000-policy file (6 MB, within its bound) is added and SIGHUP starts the
    reload that parses it (tens of seconds); SIGTERM meanwhile. The stop itself finishes
    within the 1 s grace, but the process exited only once the abandoned reload thread was
    done, long past the grace (an orchestrator SIGKILLs it: exit 137; a supervisor kills the
    worker KILL_MARGIN later and exits 1). With an entities.json far past its bound or a FIFO
    (findings 3, 4) the wait is an hour or forever."""
    stores = lending_copy(tmp_path)
    with server(stores, env={"VERDICT_POLICY_WATCH": "false"}) as (process, port, log):
        wait_serving(process, port, log)
        (stores / "lending" / "slow.cedar").write_text(slow_policies(80_000))
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # the reload is parsing (ordering only)
        process.send_signal(signal.SIGTERM)
        code = exit_code_within(process, 6)
    text = log.read_text(errors="replace")
    assert '"event": "shutdown_finished"' in text, text[-2000:]
    assert code == 0, "still running 6 s after SIGTERM (grace 1 s)"


# --- Finding 6: a SIGHUP storm queues one reload per signal -----------------------------------


def _failed_reloads(log: Path, trigger: str) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if '"policy_reload_failed"' in line and f'"trigger": "{trigger}"' in line
    )


def test_a_sighup_storm_leaves_no_backlog_of_reloads(tmp_path: Path) -> None:
    """SIGHUP every 1 ms for 0.7 s while decisions flow. Decisions all ALLOW throughout (that
    held). A store holding an unreadable file (a FIFO named *.cedar) makes every reload fail
    and log, so the reloads are counted: once the storm is over, the ones still queued must
    be a handful (a reload requested while one is pending is the same reload), not one per
    signal. A Reload RPC sent after the storm waited ~9 s behind a 3 s storm's backlog."""
    stores = lending_copy(tmp_path)
    with server(stores, env={"VERDICT_POLICY_WATCH": "false"}) as (process, port, log):
        wait_serving(process, port, log)
        os.mkfifo(stores / "lending" / "pipe.cedar")
        decisions: list[int] = []
        stop = threading.Event()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)

            def decide_in_a_loop() -> None:
                while not stop.is_set():
                    decisions.append(stub.IsAuthorized(ALLOW_REQUEST, timeout=10).decision)

            caller = threading.Thread(target=decide_in_a_loop)
            caller.start()
            try:
                end = time.monotonic() + 0.7
                while time.monotonic() < end:
                    process.send_signal(signal.SIGHUP)
                    time.sleep(0.001)
            finally:
                stop.set()
                caller.join(15)
            at_storm_end = _failed_reloads(log, "sighup")
            apb_grpc.AdminServiceStub(channel).ReloadPolicies(
                apb.ReloadPoliciesRequest(), timeout=60
            )
            after_rpc = _failed_reloads(log, "sighup")
        process.send_signal(signal.SIGTERM)
        code = exit_code_within(process, 15)
    assert decisions
    assert set(decisions) == {pb.DECISION_ALLOW}
    assert code == 0
    assert "Traceback" not in log.read_text(errors="replace")
    assert after_rpc - at_storm_end <= 20, f"{after_rpc - at_storm_end} reloads queued"


# --- Held: bounds enforced on reads that race the file's size ---------------------------------


async def test_a_policy_file_growing_past_its_bound_while_reloads_run_is_refused(
    tmp_path: Path,
) -> None:
    """A writer appends to a *.cedar in a loop from a valid small size to past 64 MiB while
    reloads run back to back: every reload answers, none serves a version with the file's
    partial content (the decision and its version stay those of the last good store), the
    server's memory stays bounded, and the last reload fails naming the file and the bound."""
    stores = lending_copy(tmp_path)
    grow = stores / "lending" / "grow.cedar"
    grow.write_text("// growing\n")
    chunk = b"// " + b"x" * (1 << 20) + b"\n"
    async with verdict_app(stores=stores, default_store="lending", policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            first = (await reload(channel))["lending"]
            before = await decide(channel, allowed_case())
            assert first.policy_version == before.policy_version

            def append() -> None:
                with grow.open("ab") as handle:
                    for _ in range(70):  # 70 MiB, past the 64 MiB bound
                        handle.write(chunk)
                        handle.flush()
                        time.sleep(0.01)  # reloads interleave with the growth

            writer = asyncio.create_task(asyncio.to_thread(append))
            while not writer.done():
                await reload(channel)
                now = await decide(channel, allowed_case())
                assert now.decision == pb.DECISION_ALLOW
            await writer
            state = (await reload(channel))["lending"]
            assert state.change == CHANGE.FAILED
            assert [(p.file, p.message) for p in state.problems] == [
                ("lending/grow.cedar", "larger than the limit of 64 MiB")
            ]
            rss_kib = _rss_kib()
    assert rss_kib < 1_500_000, f"{rss_kib} KiB"


def _rss_kib() -> int:
    """This process's resident memory (it runs the server), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_sighup_and_sigterm_to_one_worker_leave_the_supervisor_serving(tmp_path: Path) -> None:
    """`--workers 2` serving: SIGHUP then SIGTERM sent to worker 1's pid alone. The worker
    reloads, then drains and exits 0; the supervisor restarts it, answers throughout, and a
    SIGTERM to the supervisor then exits 0 with no worker left."""
    stores = lending_copy(tmp_path)
    with server(stores, "--workers", "2") as (process, port, log):
        wait_serving(process, port, log)

        def ready_pids() -> list[int]:
            text = log.read_text(errors="replace")
            return [
                int(line.split('"pid": ')[1].split(",")[0])
                for line in text.splitlines()
                if '"event": "worker_ready"' in line
            ]

        assert wait_until(lambda: len(ready_pids()) == 2, 30)
        target = ready_pids()[1]
        os.kill(target, signal.SIGHUP)
        os.kill(target, signal.SIGTERM)
        assert wait_until(lambda: len(ready_pids()) == 3, 30), "worker 1 was not restarted"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                ALLOW_REQUEST, timeout=10
            )
        assert reply.decision == pb.DECISION_ALLOW
        workers = children(process.pid)
        process.send_signal(signal.SIGTERM)
        code = exit_code_within(process, 20)
    assert code == 0
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 10)
    assert "Traceback" not in log.read_text(errors="replace")


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("Linux only (/proc, FIFOs, sparse files)")
