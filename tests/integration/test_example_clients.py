"""The Node.js and Ruby example clients, run against a real `verdict serve`, agree with Python."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.conftest import ROOT
from tests.processes import ServerProcess, verdict_server
from tests.security.authn_support import token_sha256
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.client import VerdictClient, bearer, build_request

# The first `npm ci` on a fresh machine downloads the two packages; every later run is short.
pytestmark = pytest.mark.timeout(240)

NODE_DIR = ROOT / "examples" / "node"
RUBY_DIR = ROOT / "examples" / "ruby"
TOKEN = "example-client-token"  # granted by the callers file the server fixture writes
# What both example clients ask (kept in step with examples/node/client.js and
# examples/ruby/client.rb: each output line names its request, and the test compares them).
CONTEXT = {"mfa": True, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5"}
SINGLE = ("Employee::olivia", "Action::disburse", "Loan::loan-1005")
BATCH = (
    ("Borrower::alice", "Action::view", "Loan::loan-1001"),
    ("Employee::uma", "Action::view", "Loan::loan-2001"),
    ("Employee::olivia", "Action::teleport", "Loan::loan-1005"),
    ("Borrower::bob", "Action::view", "Loan::loan-1001"),
)
FAILING_ITEM = 2


@dataclass
class ExampleClient:
    """How to start one example client: its argv before HOST:PORT, and extra environment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(self, target: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the client against ``target`` with ``env`` on top of a token-free environment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
        return subprocess.run(
            [*self.argv, target],
            env={**base, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def require_tool(name: str, install: str) -> str:
    """The path of ``name``; a missing toolchain fails the test (CI installs it), never skips."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {install} (.ci/run installs it)", pytrace=False)
    return path


def node_modules_match_lock() -> bool:
    """True when examples/node/node_modules holds exactly the versions package-lock.json pins."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    pinned = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]
    present = json.loads(installed.read_text())["packages"]

    def versions(packages: dict[str, Any]) -> dict[str, str]:
        return {k: v.get("version", "") for k, v in packages.items() if k}

    return versions(pinned) == versions(present)


@pytest.fixture(scope="module")
def node_client() -> ExampleClient:
    """The Node.js client, after `npm ci` from the lock when node_modules is missing or stale."""
    node = require_tool("node", "apt-get install nodejs")
    npm = require_tool("npm", "apt-get install npm")
    if not node_modules_match_lock():
        installed = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr}"
    return ExampleClient("node", [node, str(NODE_DIR / "client.js")])


@pytest.fixture(scope="module")
def ruby_client(tmp_path_factory: pytest.TempPathFactory) -> ExampleClient:
    """The Ruby client, with stubs freshly generated from proto/ into a temporary folder."""
    ruby = require_tool("ruby", "apt-get install ruby-grpc")
    require_tool("grpc_tools_ruby_protoc", "apt-get install ruby-grpc-tools")
    has_grpc = subprocess.run(
        [ruby, "-e", "require 'grpc'"], capture_output=True, text=True, timeout=30, check=False
    )
    if has_grpc.returncode != 0:
        message = f"ruby cannot load the grpc gem (apt-get install ruby-grpc):\n{has_grpc.stderr}"
        pytest.fail(message, pytrace=False)
    stubs = tmp_path_factory.mktemp("ruby-stubs")
    generated = subprocess.run(
        [str(RUBY_DIR / "generate.sh"), str(stubs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert generated.returncode == 0, f"generate.sh failed:\n{generated.stderr}"
    return ExampleClient(
        "ruby", [ruby, str(RUBY_DIR / "client.rb")], {"VERDICT_RUBY_STUBS": str(stubs)}
    )


@pytest.fixture(params=["node", "ruby"])
def example(request: pytest.FixtureRequest) -> ExampleClient:
    """Each example client in turn (its toolchain fixture fails when the toolchain is missing)."""
    client: ExampleClient = request.getfixturevalue(f"{request.param}_client")
    return client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`verdict serve` on the sample policies; only callers with TOKEN may ask for decisions."""
    callers = tmp_path_factory.mktemp("callers") / "callers.toml"
    callers.write_text(
        '[[callers]]\nid = "example-client"\nmethods = ["decisions"]\nstores = ["lending"]\n'
        f'token_sha256 = ["{token_sha256(TOKEN)}"]\n'
    )
    with verdict_server("--callers-file", str(callers)) as process:
        yield process


def asked(call: str, index: int, question: tuple[str, str, str]) -> dict[str, Any]:
    principal, action, resource = question
    return {
        "call": call,
        "index": index,
        "principal": principal,
        "action": action,
        "resource": resource,
    }


def decided(reply: pb.IsAuthorizedResponse) -> dict[str, Any]:
    return {
        "decision": pb.Decision.Name(reply.decision),
        "deny_kind": pb.DenyKind.Name(reply.deny_kind),
        "determining_policies": list(reply.determining_policies),
        "policy_version": reply.policy_version,
    }


def failed(code: int, message: str) -> dict[str, Any]:
    name = next(status.name for status in grpc.StatusCode if status.value[0] == code)
    return {"error": {"code": code, "name": name, "message": message}}


def python_lines(target: str) -> list[dict[str, Any]]:
    """What the project's Python client gets for the same questions, as the examples print it."""
    with VerdictClient(target, metadata=bearer(TOKEN), timeout=5) as client:
        single = client.is_authorized(*SINGLE, context=CONTEXT)
        batch = client.batch([build_request(*q, context=CONTEXT) for q in BATCH])
    lines = [asked("IsAuthorized", 0, SINGLE) | decided(single)]
    for index, (question, result) in enumerate(zip(BATCH, batch.results, strict=True)):
        outcome = (
            decided(result.response)
            if result.HasField("response")
            else failed(result.error.code, result.error.message)
        )
        lines.append(asked("BatchAuthorize", index, question) | outcome)
    return lines


def silent_listener() -> socket.socket:
    """A loopback port that accepts TCP connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_decisions_match_the_python_client(example: ExampleClient, server: ServerProcess) -> None:
    """With the token, each client's decisions and its failing batch item equal what the
    Python client gets; the undeclared action fails alone while the other items are decided."""
    target = f"127.0.0.1:{server.port}"
    run = example.run(target, VERDICT_TOKEN=TOKEN)
    assert run.returncode == 0, f"{example.name} client failed:\n{run.stderr}"
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines == python_lines(target)
    batch = lines[1:]
    assert batch[FAILING_ITEM]["error"] == {
        "code": grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "name": "INVALID_ARGUMENT",
        "message": 'action: Action::"teleport" is not declared in the schema',
    }
    decided_items = [line for i, line in enumerate(batch) if i != FAILING_ITEM]
    assert [line["decision"] for line in decided_items] == [
        "DECISION_ALLOW",
        "DECISION_DENY",
        "DECISION_DENY",
    ]
    assert lines[0]["decision"] == "DECISION_ALLOW"
    assert lines[0]["determining_policies"] == ["disburse-partner-loans"]


def test_a_refused_call_exits_non_zero(example: ExampleClient, server: ServerProcess) -> None:
    """Without VERDICT_TOKEN the server refuses the call: the client prints no decision, names
    UNAUTHENTICATED and exits 1."""
    run = example.run(f"127.0.0.1:{server.port}")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout == ""
    assert "UNAUTHENTICATED" in run.stderr


def test_every_call_has_a_deadline(example: ExampleClient) -> None:
    """Against a port that accepts connections but never speaks gRPC, the client gives up at
    its deadline (DEADLINE_EXCEEDED, exit 1) instead of waiting for the connection forever."""
    with silent_listener() as sock:
        port = sock.getsockname()[1]
        run = example.run(f"127.0.0.1:{port}", VERDICT_DEADLINE_SECONDS="0.5")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "DEADLINE_EXCEEDED" in run.stderr
