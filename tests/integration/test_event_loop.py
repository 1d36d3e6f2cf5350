"""The serving event loop: uvloop when installed (the default), asyncio on request, and a
clear refusal when uvloop is required but missing; decisions are the same on both."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.processes import verdict_server
from verdict import event_loop
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.event_loop import EventLoopError


def started_event(server_stderr: object) -> dict[str, object]:
    """The server_started log event of a running `verdict serve`."""
    for _ in range(50):  # the server answers: its start events are already written
        line = server_stderr.readline()  # type: ignore[attr-defined]
        if '"server_started"' in line:
            found: dict[str, object] = json.loads(line)
            return found
    raise AssertionError("no server_started event")


@pytest.mark.parametrize(("chosen", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_serve_runs_on_the_chosen_loop_and_decides_alike(chosen: str, expected: str) -> None:
    """`--event-loop` picks the loop (logged at start); every shared case is answered as the
    cases file says on either loop."""
    with verdict_server("--event-loop", chosen, "--log-format", "json") as server:
        assert server.process.stderr is not None
        assert started_event(server.process.stderr)["event_loop"] == expected
        for case in lending_cases():
            result = server.client.is_authorized(
                case.principal, case.action, case.resource, context=case.context
            )
            allowed = result.decision == pb.DECISION_ALLOW
            assert allowed == (case.expect == "allow"), case


def test_the_variable_chooses_too() -> None:
    """VERDICT_EVENT_LOOP=uvloop serves on uvloop; without it, asyncio's loop (the default)."""
    with verdict_server("--log-format", "json", env={"VERDICT_EVENT_LOOP": "uvloop"}) as server:
        assert server.process.stderr is not None
        assert started_event(server.process.stderr)["event_loop"] == "uvloop"
    with verdict_server("--log-format", "json") as server:
        assert server.process.stderr is not None
        assert started_event(server.process.stderr)["event_loop"] == "asyncio"


def test_an_unknown_loop_is_a_usage_error() -> None:
    """A loop that is not one of the choices names the flag and exits 2, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "verdict", "serve", "--event-loop", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--event-loop" in result.stderr
    assert "Traceback" not in result.stderr


def test_resolve_and_run() -> None:
    """auto means uvloop where it is installed (it is a dependency); run() runs on it."""
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.resolve("uvloop") == "uvloop"
    assert event_loop.resolve("asyncio") == "asyncio"
    with pytest.raises(EventLoopError, match="event_loop: 'trio' is not one of"):
        event_loop.resolve("trio")

    async def name() -> str:
        await asyncio.sleep(0)
        return event_loop.running_loop_name()

    assert event_loop.run(name(), "auto") == "uvloop"
    assert event_loop.run(name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_required_refuses() -> None:
    """Where uvloop cannot be imported, auto means asyncio, and --event-loop uvloop is refused
    with a line that says what to install (exit 2, no traceback)."""
    hidden = "import sys; sys.modules['uvloop'] = None; "
    probe = hidden + "from verdict import event_loop; print(event_loop.resolve('auto'))"
    resolved = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert resolved.stdout.strip() == "asyncio"
    serve = hidden + (
        "from verdict.cli import main; "
        f"sys.exit(main(['serve', '--stores', {str(POLICIES)!r}, '--event-loop', 'uvloop']))"
    )
    refused = subprocess.run(
        [sys.executable, "-c", serve], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2
    assert "uvloop is not installed" in refused.stderr
    assert "Traceback" not in refused.stderr
