"""Start and stop real redis-server processes (one node, or a cluster with replicas) on loopback."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import free_port as free_port  # re-exported for benchmarks

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass
class RedisProcess:
    """One redis-server bound to 127.0.0.1:port, keeping nothing on disk."""

    port: int
    workdir: Path
    extra: list[str] = field(default_factory=list)
    cli_options: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server; returns stdout ('' if it cannot connect)."""
        result = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *self.cli_options, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout

    def commands_processed(self, *names: str) -> int:
        """Calls of the given commands so far, from INFO commandstats."""
        total = 0
        for line in self.cli("INFO", "commandstats").splitlines():
            name, _, stats = line.partition(":")
            if name.removeprefix("cmdstat_") in names:
                total += int(stats.split(",")[0].removeprefix("calls="))
        return total


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisProcess]:
    """A fresh single-node Redis for the duration of the block."""
    server = RedisProcess(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="redis")
def redis_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """Fixture ``redis``: a fresh redis-server on a free port (import it into a test module)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextmanager
def redis_cluster(
    workdir: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
) -> Iterator[list[RedisProcess]]:
    """A real Redis Cluster of ``masters`` nodes, each with ``replicas`` replicas.

    The nodes are listed masters first (as ``redis-cli --cluster create`` assigns them), and
    are all killed after the block. ``node_timeout_ms`` is how long a silent node takes to be
    failed over.
    """
    nodes: list[RedisProcess] = []
    try:
        for index in range(masters * (1 + replicas)):
            nodes.append(_cluster_node(workdir / f"node{index}", node_timeout_ms))
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        _wait_until_formed(nodes, masters, replicas)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _cluster_node(workdir: Path, node_timeout_ms: int) -> RedisProcess:
    port = free_port()
    node = RedisProcess(
        port,
        workdir,
        extra=[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # The default bus port is port + 10000, which may be taken or above 65535.
            "--cluster-port",
            str(free_port()),
        ],
    )
    node.start()
    return node


def _wait_until_formed(nodes: list[RedisProcess], masters: int, replicas: int) -> None:
    """Wait until every node sees the cluster ok and every replica has synced its master."""
    deadline = time.monotonic() + 30
    while not all(_formed(node, masters * replicas) for node in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("redis cluster did not become ready")
        time.sleep(0.1)


def _formed(node: RedisProcess, replicas: int) -> bool:
    if "cluster_state:ok" not in node.cli("CLUSTER", "INFO"):
        return False
    roles = [line.split()[2] for line in node.cli("CLUSTER", "NODES").splitlines() if line]
    if sum("slave" in flags for flags in roles) != replicas:
        return False
    info = node.cli("INFO", "replication")
    return "role:master" in info or "master_link_status:up" in info


def cluster_master_of(nodes: list[RedisProcess], key: str) -> RedisProcess:
    """The running node that masters ``key``'s slot now, as the cluster itself reports it."""
    for node in nodes:
        if node.process is None:
            continue
        slot = int(node.cli("CLUSTER", "KEYSLOT", key).strip())
        for line in node.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            if any(_covers(spec, slot) for spec in fields[8:]):
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in nodes if n.port == port)
    raise RuntimeError(f"no running node masters the slot of {key!r}")


def cluster_replicas_of(nodes: list[RedisProcess], master: RedisProcess) -> list[RedisProcess]:
    """The nodes that replicate ``master`` now."""
    master_id = master.cli("CLUSTER", "MYID").strip()
    ports = {
        int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
        for line in master.cli("CLUSTER", "REPLICAS", master_id).splitlines()
        if line.strip()
    }
    return [n for n in nodes if n.port in ports]


def wait_replicated(master: RedisProcess, replica: RedisProcess, seconds: float = 10) -> None:
    """Wait until ``replica`` has applied everything ``master`` had written when called."""
    target = _info_int(master.cli("INFO", "replication"), "master_repl_offset")
    deadline = time.monotonic() + seconds
    while _info_int(replica.cli("INFO", "replication"), "slave_repl_offset") < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {replica.port} did not catch up with {master.port}")
        time.sleep(0.02)


def _info_int(info: str, name: str) -> int:
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key == name:
            return int(value)
    return -1


def _covers(spec: str, slot: int) -> bool:
    """Whether a CLUSTER NODES slot spec (``5461`` or ``0-5460``; not ``[...]``) covers slot."""
    if spec.startswith("["):
        return False
    low, _, high = spec.partition("-")
    return int(low) <= slot <= int(high or low)


def tls_redis(workdir: Path) -> tuple[RedisProcess, Path]:
    """A redis-server that speaks only TLS, with a fresh CA; returns it and the CA file."""
    workdir.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, capture_output=True, check=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=verdict-test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (workdir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    port = free_port()
    server = RedisProcess(
        port,
        workdir,
        extra=[
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(workdir / "server.crt"),
            "--tls-key-file",
            str(workdir / "server.key"),
            "--tls-ca-cert-file",
            str(workdir / "ca.crt"),
            "--tls-auth-clients",
            "no",
        ],
        cli_options=["--tls", "--cacert", str(workdir / "ca.crt")],
    )
    return server, workdir / "ca.crt"


class SubscriberDelay:
    """A loopback TCP proxy in front of Redis that can hold back what subscribers hear.

    Runs in the test's event loop. Connections that sent (P)SUBSCRIBE are subscribers; while
    ``held``, bytes from Redis to them are buffered (an invalidation in flight), and
    ``release`` delivers them in order. Every other connection passes straight through.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.held = False
        self._server: asyncio.Server | None = None
        self._subscribers: list[_Link] = []

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for link in self._subscribers:
                link.close()

    def hold(self) -> None:
        """Buffer what Redis sends to subscribers from now on."""
        self.held = True

    def release(self) -> None:
        """Deliver everything buffered, and stop buffering."""
        self.held = False
        for link in self._subscribers:
            link.flush()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link(self, writer)
        await asyncio.gather(
            self._pump(reader, up_writer, link),
            self._pump_down(up_reader, link),
            return_exceptions=True,
        )
        link.close()
        up_writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        while data := await reader.read(65536):
            if not link.subscriber and b"SUBSCRIBE" in data.upper():
                link.subscriber = True
                self._subscribers.append(link)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _pump_down(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            link.send(data)
        link.close()


class _Link:
    """The client side of one proxied connection."""

    def __init__(self, proxy: SubscriberDelay, writer: asyncio.StreamWriter) -> None:
        self._proxy = proxy
        self._writer = writer
        self._buffer: list[bytes] = []
        self.subscriber = False

    def send(self, data: bytes) -> None:
        if self.subscriber and self._proxy.held:
            self._buffer.append(data)
        else:
            self._writer.write(data)

    def flush(self) -> None:
        for data in self._buffer:
            self._writer.write(data)
        self._buffer.clear()

    def close(self) -> None:
        self._writer.close()
