"""The processes under test: redis-server, the fault proxy, `verdict serve`, another replica."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import POLICIES
from tests.faults.proxy import FaultProxy
from tests.integration.redis_apps import load_lending, redis_settings
from tests.redis_support import RedisProcess, free_port
from verdict.app import App, build_app

STORE = "lending"

# Rewritten unchanged by another replica: each write invalidates slices, so reads reach Redis.
TOUCHED = ["Loan::loan-1001", "Loan::loan-1008", "Loan::loan-1005", "Document::doc-1001-passport"]


def lending_entities() -> dict[str, dict[str, Any]]:
    """The lending store's entities.json by ``Type::id``."""
    entities = json.loads((POLICIES / STORE / "entities.json").read_text())
    return {f"{e['uid']['type']}::{e['uid']['id']}": e for e in entities}


class Rig:
    """Redis (restartable, with its dump file), the proxy the server reads through, the server
    process, and another replica that writes straight to Redis."""

    def __init__(self, workdir: Path, env: dict[str, str], workers: int = 1) -> None:
        self.workdir = workdir
        self.redis = RedisProcess(free_port(), workdir / "redis")
        self.proxy = FaultProxy(self.redis.port)
        self.env = env
        self.workers = workers  # `verdict serve --workers`; above 1 a supervisor runs them
        self.port = free_port()
        self.metrics_port = free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.replica: App | None = None
        self.writes_ok = 0
        self.writes_failed = 0
        self.writing = True
        self._writer: asyncio.Task[None] | None = None
        self._entities = lending_entities()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.redis.start()
        await self.proxy.start()
        self.replica = build_app(redis_settings(self.redis.url, cache_max_entries=0))
        await self.replica.entities.prepare()
        await load_lending(self.replica)
        self.start_server()
        await self.wait_ready()
        self._writer = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)
        if self.replica is not None:
            await self.replica.entities.close()
        await self.proxy.stop()
        self.redis.stop()

    def start_server(self) -> None:
        """`verdict serve` on the sample policies, reading Redis through the proxy."""
        command = [sys.executable, "-m", "verdict", "serve", "--stores", str(POLICIES)]
        command += ["--default-store", STORE, "--listen", self.target]
        command += ["--redis-url", self.proxy.url, "--workers", str(self.workers)]
        if self.workers > 1:  # the supervisor's /metrics says when every worker serves
            command += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        log = (self.workdir / "server.log").open("ab")
        self.server = subprocess.Popen(
            command,
            # The rig kills the server at the end: its metrics folder goes with the workdir.
            env={**os.environ, "TMPDIR": str(self.workdir), **self.env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    async def wait_ready(self, within: float = 30.0) -> float:
        """Wait until every worker serves and health says ``store/lending`` is SERVING; returns
        the seconds it took."""
        started = time.monotonic()
        while self.workers > 1 and await asyncio.to_thread(self._workers_ready) < self.workers:
            if time.monotonic() - started > within:
                raise RuntimeError("verdict serve did not start its workers; see server.log")
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() - started < within:
                try:
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service=f"store/{STORE}"), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - started
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("verdict serve did not become ready; see server.log")

    def _workers_ready(self) -> float:
        """verdict_workers_ready from the supervisor's /metrics (0 while it cannot answer)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                text = reply.read().decode()
        except OSError:
            return 0.0
        samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
        return sum(s.value for s in samples if s.name == "verdict_workers_ready")

    async def put(self, *entities: dict[str, Any]) -> int:
        """Write entities as another replica would (validated, one script, invalidation)."""
        assert self.replica is not None
        version, _ = await self.replica.writes.put(STORE, json.dumps(list(entities)))
        return version

    def entity(self, uid: str) -> dict[str, Any]:
        return self._entities[uid]

    async def reload(self) -> None:
        """What an operator does after Redis lost its data: `verdict entities load`."""
        assert self.replica is not None
        await load_lending(self.replica)

    async def _write_forever(self) -> None:
        index = 0
        while True:
            await asyncio.sleep(0.1)
            if not self.writing:
                continue
            try:
                await self.put(self.entity(TOUCHED[index % len(TOUCHED)]))
                self.writes_ok += 1
            except Exception:  # Redis down or slow: the writer only counts
                self.writes_failed += 1
            index += 1
