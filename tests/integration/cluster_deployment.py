"""Three `verdict serve` processes on one Redis Cluster, with small tenant stores, for tests."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.processes import free_port
from tests.redis_support import RedisProcess, cluster_master_of
from tests.security.serve_process import serve_command
from tests.stores import entity, write_store
from verdict.client import ALLOW, DENY, VerdictClient, build_request

# Viewers may view; a user's role is the only thing the test's writes change.
POLICY = (
    '@id("viewers") permit(principal, action == Action::"view", resource)\n'
    'when { principal in Role::"viewer" };\n'
)
USERS = [f"u{i}" for i in range(8)]
VIEWERS = {"u0", "u1", "u2", "u3"}  # as first loaded; the others are denied


def version_key(store: str) -> str:
    """The key whose slot holds every key of ``store`` (its hash tag is the store id)."""
    return f"verdict:{{{store}}}:version"


def tenant_stores(nodes: list[RedisProcess], count: int) -> list[str]:
    """Store ids whose keys land on ``count`` different masters (the first one's master first)."""
    chosen: dict[int, str] = {}
    for index in range(200):
        name = f"tenant{index}"
        chosen.setdefault(cluster_master_of(nodes, version_key(name)).port, name)
        if len(chosen) == count:
            return list(chosen.values())
    raise RuntimeError("no store ids found on distinct masters")


def write_stores(root: Path, names: list[str]) -> Path:
    """One folder per store: the same policy, no entities.json (its first write loads it)."""
    for name in names:
        write_store(root, name, {"view.cedar": POLICY})
    return root


def user(name: str, viewer: bool) -> dict[str, Any]:
    """User ``name``, in Role::"viewer" or not."""
    return entity("User", name, parents=[("Role", "viewer")] if viewer else [])


def initial_entities() -> str:
    """The users as first loaded, the role and the document they may view."""
    entities = [user(name, name in VIEWERS) for name in USERS]
    return json.dumps([*entities, entity("Role", "viewer"), entity("Doc", "d")])


def view(store: str, name: str, min_version: int = 0) -> Any:
    """May ``name`` view the document of ``store``?"""
    return build_request(
        f'User::"{name}"', 'Action::"view"', 'Doc::"d"', store=store, min_entity_version=min_version
    )


@dataclass
class Server:
    """One `verdict serve` process, its client and the file its logs go to."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    client: VerdictClient

    def cache_hits(self) -> float:
        """Decisions whose entities came from the local cache so far (its /metrics)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith('verdict_entity_cache_lookups_total{result="hit"}'):
                return float(line.split()[-1])
        return 0.0

    def events(self) -> list[dict[str, Any]]:
        """The JSON log records written so far."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            start = line.find("{")
            if start >= 0:
                try:
                    records.append(json.loads(line[start:]))
                except ValueError:
                    continue
        return records

    def decide(self, request: Any) -> str:
        """'allow', 'deny', or the gRPC status name of an error."""
        try:
            decision = self.client.send(request).decision
        except grpc.RpcError as error:
            return str(error.code().name)
        return {ALLOW: "allow", DENY: "deny"}.get(decision, f"decision {decision}")


@contextmanager
def cluster_servers(
    stores: Path, seed_url: str, workdir: Path, count: int
) -> Iterator[list[Server]]:
    """``count`` servers (one worker each) on the cluster at ``seed_url``; killed afterwards."""
    with ExitStack() as stack:
        servers = [
            stack.enter_context(_server(stores, seed_url, workdir / f"server{i}.log"))
            for i in range(count)
        ]
        for server in servers:
            _wait_ready(server)
        yield servers


@contextmanager
def _server(stores: Path, seed_url: str, log_path: Path) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    command = serve_command(
        stores,
        port,
        *("--workers", "1", "--redis-url", seed_url, "--redis-cluster", "--log-format", "json"),
        *("--metrics-listen", f"127.0.0.1:{metrics_port}"),
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stderr=log, stdout=subprocess.DEVNULL, env=os.environ)
    client = VerdictClient(f"127.0.0.1:{port}", timeout=2, retries=0)
    try:
        yield Server(process, port, metrics_port, log_path, client)
    finally:
        client.close()
        process.kill()
        process.wait(timeout=10)


def _wait_ready(server: Server) -> None:
    """Until the port accepts calls and the listener is subscribed on every master."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"verdict serve exited: {server.log_path.read_text()}")
        if any(e.get("event") == "invalidation_subscribed" for e in server.events()):
            grpc.channel_ready_future(server.client._channel).result(timeout=10)
            return
        time.sleep(0.05)
    raise AssertionError("verdict serve did not subscribe within 30 s")
