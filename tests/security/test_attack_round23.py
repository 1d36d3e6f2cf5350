"""Attack round 23 (short): the ``explain`` feature, the start's settled load, and the CLI's
remote commands (``check|test --server``, ``entities get --server``) against a hostile or
broken server: a real gRPC server written here answering odd replies, the ``verdict`` CLI as
subprocesses.

Findings, fixed in the same session (each a test asserting the correct behaviour; they were
strict xfails): server strings are printed through ``model.shown_text`` (controls escaped)
by ``check``, ``rpc_failure``, ``test --server``'s report and its version note:

1. **Misleading output: ``verdict check --server`` prints a server's text with its control
   characters.** The determining policy ids, the error messages, the policy version and store
   id of a reply (``cli/check.py`` ``_print_result``) and a failed call's status details
   (``cli/remote.py`` ``rpc_failure``) reach the terminal raw. A hostile or compromised server
   answering DENY with a policy id holding ``ESC[1A ESC[2K`` (cursor up, erase line) makes the
   terminal show ``decision: ALLOW`` over the real ``decision: DENY`` (exit status 1 still says
   deny, but a person reads the screen); newlines forge whole lines. Uids are escaped
   (``EntityUid.__str__`` -> ``quote_id``: "every control or unprintable character escaped"),
   the other server-supplied strings are not. ``verdict test --server``'s report
   (``policytest/report.py`` ``describe_outcome``) prints the same fields the same way.

Held (plain tests below): a server that never answers stops ``check --server`` at its
``--timeout`` with one line (exit 2); a reply without a decision stops ``test --server`` (exit
2, "malformed reply") instead of judging DENY cases passed; ``entities get --server`` given a
reply whose ``entities_json`` is not JSON says so in one line (exit 2, no traceback).

Also read, no test: ``engine/explain.py`` splits only top-level ``&&`` (left to right, as
Cedar's short circuit evaluates), stops at the first false or erroring conjunct and marks later
clauses ``skipped``, on the same slice and request entities as the decision, and only for
policies ``PolicyIndex.select`` keeps after its exact scope check: no condition Cedar never
evaluated was found reported (not exhaustive: a scope shape ``read_scope`` reads as ``All``
would be explained on a request Cedar's scope rejects; none was found in Cedar's JSON forms).
``PROBE_CHUNK`` counts policies, not probes: a policy of thousands of conjuncts is built and
evaluated as one Cedar call between deadline checks (the store's author controls that, not the
caller). ``app.load_at_start`` retries on ``EntitiesChangedError`` (a ``PolicyLoadError``, so
the third failure is a refused start with diagnostics, not a traceback); the race itself was
not re-run this round.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from tests.conftest import POLICIES
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc

# Cursor up one line, erase it, carriage return: what a terminal shows is rewritten.
OVERWRITE = "\x1b[1A\x1b[2K\r"
FORGED = OVERWRITE + "decision: ALLOW"

Answer = Callable[[Any, grpc.ServicerContext], Any]


class HostileAuthorization(pb_grpc.AuthorizationServiceServicer):
    """IsAuthorized and BatchAuthorize answered by ``answer`` (request, context)."""

    def __init__(self, answer: Answer, batch: Answer | None = None) -> None:
        self.answer = answer
        self.batch = batch

    def IsAuthorized(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.answer(request, context)

    def BatchAuthorize(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert self.batch is not None
        return self.batch(request, context)


class HostileEntities(epb_grpc.EntityServiceServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def GetEntities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.answer(request, context)

    def PutEntities(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "")

    def DeleteEntities(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "")


@contextmanager
def hostile_server(
    authorization: HostileAuthorization | None = None, entities: HostileEntities | None = None
) -> Iterator[str]:
    """A real gRPC server on loopback with the given servicers; its ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if authorization is not None:
        pb_grpc.add_AuthorizationServiceServicer_to_server(authorization, server)
    if entities is not None:
        epb_grpc.add_EntityServiceServicer_to_server(entities, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(5)


def verdict(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m verdict ARGS`` (no VERDICT_ settings of the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def check(target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return verdict(
        "check", "--server", target, "--principal", 'User::"alice"', "--action",
        'Action::"view"', "--resource", 'Loan::"loan-1001"', *extra,
    )  # fmt: skip


def controls(text: str) -> list[str]:
    """The control characters in ``text`` other than the newlines that end lines."""
    return sorted({c for c in text if not c.isprintable() and c != "\n"})


# --- Finding 1: a server's text reaches the terminal with its control characters ---------------


def test_check_server_escapes_the_servers_policy_ids_and_messages() -> None:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        return pb.IsAuthorizedResponse(
            decision=pb.DECISION_DENY,
            deny_kind=pb.DENY_KIND_EXPLICIT_FORBID,
            determining_policies=["forbid-1" + FORGED],
            policy_version="v1" + OVERWRITE,
            policy_store_id="lending",
        )

    with hostile_server(HostileAuthorization(deny)) as target:
        result = check(target, "--timeout", "5")
    assert result.returncode == 1, result.stderr  # the exit status does say DENY
    assert "decision: DENY" in result.stdout
    shown = result.stdout + result.stderr
    assert controls(shown) == [], f"terminal control characters from the server: {shown!r}"


def test_check_server_escapes_a_refusals_details() -> None:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no" + FORGED)

    with hostile_server(HostileAuthorization(refuse)) as target:
        result = check(target, "--timeout", "5")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    shown = result.stdout + result.stderr
    assert controls(shown) == [], f"terminal control characters from the server: {shown!r}"


# --- Held ------------------------------------------------------------------------------------


def test_check_server_against_a_server_that_never_answers_stops_at_the_timeout() -> None:
    def stall(request: Any, context: grpc.ServicerContext) -> Any:
        time.sleep(4)
        return pb.IsAuthorizedResponse(decision=pb.DECISION_ALLOW)

    with hostile_server(HostileAuthorization(stall)) as target:
        started = time.monotonic()
        result = check(target, "--timeout", "0.5")
        took = time.monotonic() - started
    assert result.returncode == 2, result.stdout
    assert "DEADLINE_EXCEEDED" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 3.5, took


def test_test_server_does_not_judge_a_reply_without_a_decision() -> None:
    """Every item a response with DECISION_UNSPECIFIED (a DENY to a careless reader): the run
    stops (exit 2) instead of passing the suites' DENY cases."""

    def undecided(request: Any, context: grpc.ServicerContext) -> Any:
        item = pb.BatchAuthorizeResult(response=pb.IsAuthorizedResponse(policy_store_id="x"))
        return pb.BatchAuthorizeResponse(results=[item] * len(request.requests))

    service = HostileAuthorization(undecided, batch=undecided)
    with hostile_server(service) as target:
        result = verdict("test", "--stores", str(POLICIES), "--server", target, "--timeout", "5")
    assert result.returncode == 2, result.stdout
    assert "malformed reply" in result.stderr
    assert "Traceback" not in result.stderr


def test_entities_get_server_with_a_malformed_reply_is_one_line() -> None:
    def garbage(request: Any, context: grpc.ServicerContext) -> Any:
        return epb.GetEntitiesResponse(entities_json='[{"uid": ' + "[" * 5000, version=1)

    with hostile_server(entities=HostileEntities(garbage)) as target:
        result = verdict("entities", "get", "--server", target, "--timeout", "5", "User::alice")
    assert result.returncode == 2, result.stdout
    assert "malformed reply" in result.stderr
    assert "Traceback" not in result.stderr
