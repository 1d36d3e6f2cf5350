"""Overload by CPU: calls waiting in grpc core for the event loop are bounded by a setting."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import POLICIES
from tests.security.serve_process import running_server
from verdict.config import Settings
from verdict.transport.connection_limits import ConnectionLimits

FLOOD_SECONDS = "3"


def flood(port: int, callers: int) -> dict[str, int]:
    """Status codes of ``callers`` closed-loop callers of one cached decision, from another
    process (the flood must not share the server's event loop, or it would pace itself)."""
    command = [sys.executable, "-m", "tests.faults.flood", f"127.0.0.1:{port}", str(callers)]
    done = subprocess.run(
        [*command, FLOOD_SECONDS, "hits", "0.02"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    codes: dict[str, int] = json.loads(done.stdout)["codes"]
    return codes


def test_pending_limit_is_passed_to_grpc_core() -> None:
    """max_pending_calls becomes grpc core's pending-call limits: random early refusals from
    half of it, every new call refused past all of it."""
    options = dict(ConnectionLimits(max_pending_calls=64).grpc_options())
    assert options["grpc.server.max_pending_requests"] == 32
    assert options["grpc.server.max_pending_requests_hard_limit"] == 64
    assert Settings(stores=POLICIES).max_pending_calls == 128


def test_cpu_bound_flood_past_the_pending_limit_is_refused_not_queued() -> None:
    """200 callers of a cached decision against max_pending_calls 8: grpc core refuses calls
    (CANCELLED) instead of queueing them all, and every admitted call is answered."""
    env = {"VERDICT_MAX_PENDING_CALLS": "8", "VERDICT_LOG_LEVEL": "warning"}
    with running_server(POLICIES, "--default-store", "lending", env=env) as (process, port):
        codes = flood(port, 200)
        assert process.poll() is None
    assert codes.get("CANCELLED", 0) > 0
    assert codes.get("OK", 0) > 0
    assert set(codes) <= {"OK", "CANCELLED"}


def test_callers_within_the_pending_limit_are_never_refused() -> None:
    """8 callers at a time never reach the default pending limit (128): nothing is refused."""
    env = {"VERDICT_LOG_LEVEL": "warning"}
    with running_server(POLICIES, "--default-store", "lending", env=env) as (_, port):
        codes = flood(port, 8)
    assert set(codes) == {"OK"}
    assert codes["OK"] > 0
