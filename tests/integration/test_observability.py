"""Observability over a real server process: /metrics alone (404 elsewhere), every metric the
Grafana dashboard queries is exported, and JSON log lines never carry loan data."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.conftest import POLICIES
from tests.processes import free_port
from tests.security.serve_process import running_server
from verdict.client import VerdictClient, build_request

DASHBOARD = Path(__file__).parents[2] / "k8s" / "monitoring" / "grafana-dashboard.json"
CANARY = "CANARY-4111-1111-1111-1111"  # a card number shape: must never reach a log
CONTEXT = {"mfa": True, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5"}


def fetch(url: str) -> tuple[int, str]:
    """HTTP status and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def exercise(port: int) -> None:
    """Decisions (allow, deny kinds), a batch, invalid requests and writes carrying the canary
    in context values, entity attributes and ids."""
    with VerdictClient(f"127.0.0.1:{port}", timeout=5) as client:
        client.is_authorized("Employee::uma", "Action::view", "Loan::loan-1001", context=CONTEXT)
        client.is_authorized("Employee::uma", "Action::view", "Loan::loan-2001", context=CONTEXT)
        client.batch([build_request("Employee::nobody", "Action::view", "Loan::loan-1001",
                                    context=CONTEXT)] * 3)  # fmt: skip
        bad = [
            {**CONTEXT, "mfa": CANARY},
            {**CONTEXT, "note": CANARY},
            {"nested": {"deep": [CANARY]}},
        ]
        for context in bad:
            with pytest.raises(grpc.RpcError):
                client.is_authorized(
                    "Employee::uma", "Action::view", "Loan::loan-1001", context=context
                )
        with pytest.raises(grpc.RpcError):
            client.is_authorized(f'Employee::"{CANARY}"', "Action::veiw", "Loan::loan-1001")
        entity = {
            "uid": {"type": "Employee", "id": "canary"},
            "attrs": {"name": CANARY},
            "parents": [],
        }
        with pytest.raises(grpc.RpcError):
            client.put_entities([entity])  # incomplete attributes: refused by the schema


def test_metrics_page_and_dashboard_queries() -> None:
    """/metrics answers, /healthz and / are 404; every verdict_ metric named in the dashboard's
    queries is in the exposition after traffic."""
    metrics_port = free_port()
    env = {"VERDICT_LOG_FORMAT": "json"}
    args = ("--default-store", "lending", "--workers", "1", "--metrics-listen",
            f"127.0.0.1:{metrics_port}")  # fmt: skip
    with running_server(POLICIES, *args, env=env) as (_, port):
        exercise(port)
        status, page = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        for path in ("/healthz", "/", "/metrics/x"):
            assert fetch(f"http://127.0.0.1:{metrics_port}{path}")[0] == 404
    # A family is exported once declared (# TYPE), even before its first labelled sample.
    declared = dict(re.findall(r"^# TYPE (verdict_\w+) (\w+)$", page, re.MULTILINE))
    exported = set(re.findall(r"^(verdict_\w+?)(?:\{| )", page, re.MULTILINE))
    for name, kind in declared.items():
        exported |= {name, f"{name}_total"} if kind == "counter" else {name}
        if kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"verdict_\w+", target["expr"])
    }
    assert queried
    missing = sorted(name for name in queried if name not in exported)
    assert missing == [], f"the dashboard queries metrics the server does not export: {missing}"


def test_json_logs_carry_no_loan_data() -> None:
    """Every line the server logs is a JSON object with an event name, and none carries the
    canary planted in context values, entity attributes and uids."""
    env = {"VERDICT_LOG_FORMAT": "json", "VERDICT_LOG_LEVEL": "debug"}
    with running_server(POLICIES, "--default-store", "lending", "--workers", "1", env=env) as (
        process,
        port,
    ):
        exercise(port)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) > 5
    for line in lines:
        if not line.startswith("{"):
            assert line.startswith("I1202") or "chttp2" in line or line.startswith("E"), line
            continue
        record = json.loads(line)
        assert isinstance(record.get("event"), str)
    assert CANARY not in stderr
