"""An explained decision whose caller's deadline passes during the explanation is refused.

Explaining a selection of thousands of policies takes seconds (a Cedar probe per conjunct), and
it ran to its end after the decision whatever the caller's deadline: the caller had long got
DEADLINE_EXCEEDED from its own client while the server held its loop, then counted the decision
as ALLOWed and wrote it to the audit log as answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.processes import free_port
from tests.security.serve_process import wait_serving
from tests.security.test_attack_round5 import server
from tests.workers_support import scraped_metric
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

POLICIES = 15_000  # explained in ~2-3 s; decided in well under 0.1 s
DEADLINE = 0.5  # seconds


def many_permits(tmp_path: Path) -> Path:
    """A schema-less store whose POLICIES permits all match alice viewing d1 by scope, each
    with three conjuncts, one of which holds for her (she is allowed)."""
    store = tmp_path / "stores" / "docs"
    store.mkdir(parents=True)
    (store / "docs.cedar").write_text(
        "".join(
            f'@id("p{i}")\npermit (principal, action, resource) when '
            f"{{ principal.admin && resource.n == {i} && context.k == {i} }};\n"
            for i in range(POLICIES)
        )
    )
    (store / "store.toml").write_text('validation = "off"\n')
    entities = [
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"admin": True}, "parents": []},
        {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"n": 3}, "parents": []},
    ]
    (store / "entities.json").write_text(json.dumps(entities))
    return store.parent


def request(explain: bool) -> pb.IsAuthorizedRequest:
    message = build_request('User::"alice"', 'Action::"view"', 'Doc::"d1"', context={"k": 3})
    message.explain = explain
    return message


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"{name}"' in line:
            event = json.loads(line[line.index("{") :])
            if event.get("event") == name:
                found.append(event)
    return found


def audited(audit: Path) -> list[str]:
    """The decisions in the audit file, in order."""
    if not audit.exists():
        return []
    lines = audit.read_text().splitlines()
    return [r["decision"] for r in map(json.loads, lines) if "decision" in r]


def test_an_explanation_past_the_callers_deadline_is_refused_not_answered(
    tmp_path: Path,
) -> None:
    """A decision on POLICIES permits, explained, with a 0.5 s deadline. The caller gets
    DEADLINE_EXCEEDED; the server must give up the explanation too: refuse the call as
    DEADLINE_EXCEEDED (its log), never count or audit an ALLOW nobody received. It explained
    all 15,000 policies, then counted and audited the ALLOW."""
    stores = many_permits(tmp_path)
    audit, metrics_port = tmp_path / "audit.jsonl", free_port()
    args = ["--default-store", "docs", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    args += ["--audit-sink", "file", "--audit-file", str(audit)]
    with server(stores, *args) as (process, port, log):
        wait_serving(process, port, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            # Unexplained, with time to spare: the decision alone is quick, and now warm.
            assert stub.IsAuthorized(request(False), timeout=30).decision == pb.DECISION_ALLOW
            assert audited(audit) == ["ALLOW"]
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as late:
                stub.IsAuthorized(request(True), timeout=DEADLINE)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server's own outcome: a refusal, or (the bug) an ALLOW counted and audited.
            allowed = {"store": "docs", "decision": "allow"}
            while not events(log, "request_rejected") and len(audited(audit)) < 2:
                assert time.monotonic() - started < 60, log.read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(0.3)  # an ALLOW being recorded as the refusal is logged (ordering only)
            assert audited(audit) == ["ALLOW"]  # the warm-up's alone
            assert scraped_metric(metrics_port, "verdict_decisions_total", **allowed) == 1
            rejected = [(e["rpc"], e["code"]) for e in events(log, "request_rejected")]
            assert rejected == [("IsAuthorized", "DEADLINE_EXCEEDED")]
            # Given the time, the same explained decision is answered in full.
            full = stub.IsAuthorized(request(True), timeout=60)
            assert full.decision == pb.DECISION_ALLOW
            assert len(full.explanations) == POLICIES
            assert sum(e.applies for e in full.explanations) == 1
