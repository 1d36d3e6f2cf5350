"""Benchmark the Redis entity store against the in-memory store and a no-op gRPC floor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from matplotlib.patches import Patch

from benchmarks.loadgen import ChannelMode, LoadResult, run_grpc_load, run_load
from tests.cases import DecisionCase, lending_cases
from tests.redis_support import REDIS_SERVER, RedisProcess, free_port, redis_server
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.app import App, build_app
from verdict.client import build_request
from verdict.config import Settings
from verdict.policy.loader import load_policy_stores
from verdict.store.bulk import load_entities
from verdict.store.entity_cache import EntityCache
from verdict.store.entity_file import read_entities_file
from verdict.store.redis_connect import make_client
from verdict.store.redis_keys import EPOCH_FIELD
from verdict.store.redis_store import RedisEntityStore
from verdict.telemetry.logging import configure_logging

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
RESULTS = ROOT / "benchmarks" / "results"
STORE = "lending"
ENTITIES_KEY = "verdict:{lending}:entities"
SCENARIOS = ("noop", "memory", "redis-hit", "redis-miss")
ENGINE_STORES = ("memory", "redis-hit", "redis-miss")
FIGURE_EXTRAS = (
    "evalsha_per_decision",
    "commands_incl_lua_per_decision",
    "evalsha_server_us",
    "round_trips_per_decision",
    "other_cpu_share",
)
RATIOS = (("redis-hit", "memory"), ("redis-miss", "memory"), ("memory", "noop"))
IGNORED_COMMANDS = {"ping", "info", "psubscribe", "client|setinfo", "select"}
PIDS: list[int] = [os.getpid()]  # the benchmark's own processes, for CPU accounting
SERVE_TIMEOUT = 60.0  # seconds for a server to report SERVING
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    requests: int
    concurrency: int
    rounds: int
    warmup: int
    engine_requests: int
    bulk_entities: int
    channels: ChannelMode
    quiet_threshold: float
    out: Path

    @property
    def levels(self) -> tuple[int, int]:
        """The latency (1) and throughput concurrency levels."""
        return (1, self.concurrency)


def parse_args(argv: Sequence[str] | None) -> Plan:
    """Command-line options; ``--quick`` shrinks every count for a smoke run."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_entity_store",
        description="Decision latency/throughput with the Redis entity store (cache hit and "
        "miss) against the in-memory store and a no-op gRPC floor, engine-level figures, and "
        "a 100,000-entity bulk load. Run from the repository root. Loopback only.",
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured gRPC requests/run")
    parser.add_argument("--concurrency", type=int, default=16, help="throughput concurrency")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--warmup", type=int, default=300, help="unrecorded requests per run")
    parser.add_argument("--engine-requests", type=int, default=2000, help="in-process/run")
    parser.add_argument("--bulk-entities", type=int, default=100_000, help="0 skips bulk load")
    parser.add_argument(
        "--channels",
        choices=("shared", "per-worker"),
        default="shared",
        help="client gRPC channels (the other mode is also run for noop and memory)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.10,
        help="a run is quiet when other processes used at most this share of all CPUs; "
        "figures use quiet runs only when there are any",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--quick", action="store_true", help="small counts, one round (<40 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.warmup = 600, 1, 100
        args.engine_requests, args.bulk_entities = 800, min(args.bulk_entities, 20_000)
    fields = {k: v for k, v in vars(args).items() if k != "quick"}
    return Plan(**fields)


# --- request mix and answers -------------------------------------------------------------


def expected(case: DecisionCase, allowed: bool, determining: Sequence[str]) -> bool:
    """Whether an answer is the one the shared decision cases require."""
    return allowed == (case.expect == "allow") and frozenset(determining) == case.determining


def grpc_messages(cases: Sequence[DecisionCase]) -> list[pb.IsAuthorizedRequest]:
    """The lending cases as wire requests (context already merged with BASE_CONTEXT)."""
    return [
        build_request(c.principal, c.action, c.resource, context=c.context, store=STORE)
        for c in cases
    ]


def is_authorized(channel: grpc.aio.Channel) -> Any:
    """The stub method the load generator calls."""
    return pb_grpc.AuthorizationServiceStub(channel).IsAuthorized


# --- Redis bookkeeping -------------------------------------------------------------------


def command_stats(redis: RedisProcess) -> dict[str, tuple[int, int]]:
    """(calls, microseconds) per command so far, from INFO commandstats."""
    stats: dict[str, tuple[int, int]] = {}
    for line in redis.cli("INFO", "commandstats").splitlines():
        name, _, text = line.partition(":")
        if name.startswith("cmdstat_"):
            fields = dict(item.split("=") for item in text.split(","))
            stats[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return stats


def command_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> JsonDict:
    """EVALSHA calls and server time, and all commands in between (pings and INFO excluded).

    commandstats also counts the HMGET/GET calls a Lua script makes inside its one EVALSHA,
    so ``commands`` is not a round-trip count: ``evalsha`` (and the store's counter) is.
    """
    calls = {k: v[0] - before.get(k, (0, 0))[0] for k, v in after.items()}
    evalsha_usec = after.get("evalsha", (0, 0))[1] - before.get("evalsha", (0, 0))[1]
    return {
        "evalsha": calls.get("evalsha", 0),
        "evalsha_usec": evalsha_usec,
        "commands": sum(v for k, v in calls.items() if k not in IGNORED_COMMANDS),
    }


def hlen(redis: RedisProcess, key: str = ENTITIES_KEY) -> int:
    """Number of entities in a store's hash: its fields but the load epoch's."""
    fields = int(redis.cli("HLEN", key).strip() or 0)
    return fields - int(redis.cli("HEXISTS", key, EPOCH_FIELD).strip() or 0)


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU seconds and the CPU seconds of the benchmark's own processes."""

    wall: float
    busy: float
    ours: float


def cpu_snapshot(pids: Sequence[int]) -> CpuSnapshot:
    """Read /proc/stat (user+nice+system) and /proc/PID/stat (utime+stime) of ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split()[1:4])
    ours = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])
    return CpuSnapshot(time.monotonic(), (user + nice + system) / ticks, ours / ticks)


def other_cpu_share(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Share of the machine's CPU used by processes that are not the benchmark's (approx.)."""
    capacity = (after.wall - before.wall) * (os.cpu_count() or 1)
    other = (after.busy - before.busy) - (after.ours - before.ours)
    return max(0.0, other / capacity) if capacity > 0 else 0.0


# --- server subprocesses -----------------------------------------------------------------


@dataclass
class Server:
    """One server subprocess on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_argv(name: str, port: int, redis_url: str) -> list[str]:
    """The command line of one scenario's server."""
    listen = f"127.0.0.1:{port}"
    if name == "noop":
        return [sys.executable, "-m", "benchmarks.noop_server", "--listen", listen]
    argv = [sys.executable, "-m", "verdict", "serve", "--stores", str(POLICIES)]
    argv += ["--default-store", STORE, "--listen", listen]
    return argv if name == "memory" else [*argv, "--redis-url", redis_url]


def spawn(name: str, redis_url: str, logdir: Path) -> Server:
    """Start a scenario's server in its own process (its own CPU, not the client's loop)."""
    port = free_port()
    env = {**os.environ, "VERDICT_LOG_LEVEL": "warning"}
    if name == "redis-miss":
        env["VERDICT_CACHE_MAX_ENTRIES"] = "0"  # every decision reads Redis
    log = logdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            server_argv(name, port, redis_url), cwd=ROOT, env=env, stdout=sink, stderr=sink
        )
    return Server(name, port, process, log)


def stop_server(server: Server) -> None:
    """SIGTERM, then kill if it does not exit within 10 s."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@contextlib.contextmanager
def running_servers(redis_url: str, logdir: Path) -> Iterator[dict[str, Server]]:
    """Every scenario's server, stopped on exit."""
    started: dict[str, Server] = {}
    try:
        for name in SCENARIOS:
            started[name] = spawn(name, redis_url, logdir)
        yield started
    finally:
        for server in started.values():
            stop_server(server)


async def wait_serving(server: Server) -> None:
    """Poll the health service until SERVING; fail early if the process died."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-2000:]}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} did not report SERVING within {SERVE_TIMEOUT} s")


async def check_grpc_answers(server: Server, cases: Sequence[DecisionCase]) -> None:
    """Every case answered as expected over gRPC (also fills the Redis-hit cache)."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        for case, message in zip(cases, grpc_messages(cases), strict=True):
            reply = await stub.IsAuthorized(message, timeout=5)
            allowed = reply.decision == pb.DECISION_ALLOW
            if not expected(case, allowed, reply.determining_policies):
                raise RuntimeError(f"{server.name}: wrong answer for {case}")


# --- gRPC phase --------------------------------------------------------------------------


def run_record(result: LoadResult, scale: float = 1.0) -> JsonDict:
    """A run's figures; ``scale`` converts ms to another unit (1000 for microseconds)."""
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests: {result.first_error}")
    record = result.as_dict()
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"):
        record[key] = record[key] * scale
    return record


async def grpc_run(
    plan: Plan, server: Server, redis: RedisProcess, concurrency: int, channels: ChannelMode
) -> JsonDict:
    """One closed-loop run against one server, with Redis commands counted server side."""
    messages = grpc_messages(lending_cases())
    before = command_stats(redis)
    cpu = cpu_snapshot(PIDS)
    result = await run_grpc_load(
        server.target,
        is_authorized,
        messages,
        concurrency=concurrency,
        channels=channels,
        requests=plan.requests,
        warmup=plan.warmup,
    )
    other_cpu = other_cpu_share(cpu, cpu_snapshot(PIDS))
    delta = command_delta(before, command_stats(redis))
    decisions = plan.requests + plan.warmup
    record = run_record(result)
    record["evalsha_per_decision"] = delta["evalsha"] / decisions
    record["commands_incl_lua_per_decision"] = delta["commands"] / decisions
    record["evalsha_server_us"] = delta["evalsha_usec"] / max(delta["evalsha"], 1)
    record["other_cpu_share"] = other_cpu
    return {"scenario": server.name, "channels": channels, **record}


def rotated(names: Sequence[str], by: int) -> list[str]:
    """``names`` starting at index ``by``: each round runs the scenarios in a new order."""
    shift = by % len(names)
    return [*names[shift:], *names[:shift]]


async def grpc_round(
    plan: Plan, servers: dict[str, Server], redis: RedisProcess, round_no: int
) -> list[JsonDict]:
    """Every scenario at each level, plus the floor and memory with the other channel mode."""
    other: ChannelMode = "per-worker" if plan.channels == "shared" else "shared"
    runs = []
    for name in rotated(SCENARIOS, round_no):
        for level in plan.levels:
            runs.append(await grpc_run(plan, servers[name], redis, level, plan.channels))
    for name in ("noop", "memory"):
        runs.append(await grpc_run(plan, servers[name], redis, plan.concurrency, other))
    for run in runs:
        run["round"] = round_no
    return runs


async def grpc_phase(plan: Plan, servers: dict[str, Server], redis: RedisProcess) -> list[JsonDict]:
    """Wait for the servers, check their answers, then run the interleaved rounds."""
    await asyncio.gather(*(wait_serving(server) for server in servers.values()))
    cases = lending_cases()
    for name in ENGINE_STORES:
        await check_grpc_answers(servers[name], cases)
    runs: list[JsonDict] = []
    for round_no in range(plan.rounds):
        runs += await grpc_round(plan, servers, redis, round_no)
        progress(f"grpc round {round_no + 1}/{plan.rounds} done")
    return runs


# --- engine phase (in process, no gRPC) ----------------------------------------------------


async def load_sample_entities(app: App) -> int:
    """Write the lending store's entities.json through ``app``'s store; returns the version."""
    store = app.policies.current.resolve(STORE)
    assert store.entities_file is not None
    entities = read_entities_file(store.entities_file, store.schema)
    return await load_entities(app.entities, STORE, list(entities.values()))


def redis_app(url: str, **overrides: Any) -> App:
    """An app on Redis at ``url`` (not started)."""
    settings = Settings(
        stores=POLICIES, default_store=STORE, redis_url=url, listen="127.0.0.1:0", **overrides
    )
    return build_app(settings)


@contextlib.asynccontextmanager
async def engine_apps(redis_url: str) -> AsyncIterator[dict[str, App]]:
    """Memory, Redis with cache, Redis without cache; the Redis ones subscribed."""
    apps = {
        "memory": build_app(Settings(stores=POLICIES, default_store=STORE)),
        "redis-hit": redis_app(redis_url),
        "redis-miss": redis_app(redis_url, cache_max_entries=0),
    }
    redis_apps = [apps["redis-hit"], apps["redis-miss"]]
    try:
        for app in redis_apps:
            await app.entities.prepare()
        await load_sample_entities(apps["redis-hit"])
        for app in redis_apps:
            assert app.listener is not None
            app.listener.start()
            await asyncio.wait_for(app.listener.subscribed.wait(), 10)
        yield apps
    finally:
        for app in redis_apps:
            if app.listener is not None:
                await app.listener.stop()
            await app.entities.close()


async def check_engine_answers(name: str, app: App, cases: Sequence[DecisionCase]) -> None:
    """Every case decided as expected in process (also fills the Redis-hit cache)."""
    for case in cases:
        result = await app.authorizer.authorize(case.request)
        if not expected(case, result.allowed, result.determining_policies):
            raise RuntimeError(f"{name}: wrong answer for {case}")


async def engine_run(plan: Plan, name: str, app: App, concurrency: int) -> JsonDict:
    """Closed-loop ``authorize`` calls; Redis round trips counted by the store itself."""
    requests = [case.request for case in lending_cases()]
    authorize = app.authorizer.authorize

    async def call(index: int) -> object:
        return await authorize(requests[index % len(requests)])

    store = app.entities
    trips_before = store.round_trips if isinstance(store, RedisEntityStore) else 0
    cpu = cpu_snapshot(PIDS)
    result = await run_load(
        call, concurrency=concurrency, requests=plan.engine_requests, warmup=plan.warmup
    )
    other_cpu = other_cpu_share(cpu, cpu_snapshot(PIDS))
    trips = (store.round_trips if isinstance(store, RedisEntityStore) else 0) - trips_before
    record = run_record(result, scale=1000.0)  # microseconds
    record = {k.replace("_ms", "_us"): v for k, v in record.items()}
    record["round_trips_per_decision"] = trips / (plan.engine_requests + plan.warmup)
    record["other_cpu_share"] = other_cpu
    return {"scenario": name, **record}


async def engine_phase(plan: Plan, redis_url: str) -> list[JsonDict]:
    """In-process decisions for each store, interleaved rounds, both concurrency levels."""
    cases = lending_cases()
    runs: list[JsonDict] = []
    async with engine_apps(redis_url) as apps:
        for name, app in apps.items():
            await check_engine_answers(name, app, cases)
        for round_no in range(plan.rounds):
            for name in rotated(ENGINE_STORES, round_no):
                for level in plan.levels:
                    run = await engine_run(plan, name, apps[name], level)
                    runs.append({**run, "round": round_no})
            progress(f"engine round {round_no + 1}/{plan.rounds} done")
    return runs


# --- bulk load -----------------------------------------------------------------------------

ROLES = ("loan_officer", "underwriter", "senior_underwriter", "support_agent", "compliance")
STATUSES = ("draft", "submitted", "under_review", "approved", "disbursed", "rejected")


def ref(kind: str, ident: str) -> JsonDict:
    """An entity reference attribute value."""
    return {"__entity": {"type": kind, "id": ident}}


def uid(kind: str, ident: str) -> JsonDict:
    """An entity uid."""
    return {"type": kind, "id": ident}


def entity_counts(total: int) -> dict[str, int]:
    """How many of each type make ``total`` entities (documents take the remainder)."""
    counts = {
        "Partner": max(2, total // 10_000),
        "Role": len(ROLES) + 1,
        "Employee": max(1, total // 100),
        "Borrower": max(1, total // 5),
        "Loan": max(1, 2 * total // 5),
    }
    counts["Document"] = total - sum(counts.values())
    if counts["Document"] < 0:
        raise ValueError("too few entities for every type")
    return counts


def entity(kind: str, ident: str, attrs: JsonDict, parents: Sequence[JsonDict] = ()) -> JsonDict:
    """One Cedar JSON entity."""
    return {"uid": uid(kind, ident), "attrs": attrs, "parents": list(parents)}


def people(counts: dict[str, int], rng: random.Random) -> list[JsonDict]:
    """Partners, roles, employees (members of one or two roles) and borrowers."""
    partners = [f"partner-{i:03d}" for i in range(counts["Partner"])]
    out = [entity("Partner", p, {"name": p, "kind": "bank", "active": True}) for p in partners]
    out += [entity("Role", r, {}) for r in (*ROLES, "admin")]
    for i in range(counts["Employee"]):
        attrs: JsonDict = {"name": f"Employee {i}", "partner": ref("Partner", rng.choice(partners))}
        attrs |= {"department": "lending", "approval_limit": rng.randrange(0, 10**6, 1000)}
        attrs["suspended"] = False
        roles = [uid("Role", r) for r in rng.sample(ROLES, rng.randint(1, 2))]
        out.append(entity("Employee", f"emp-{i:06d}", attrs, roles))
    for i in range(counts["Borrower"]):
        attrs = {"name": f"Borrower {i}", "partner": ref("Partner", rng.choice(partners))}
        attrs |= {"kyc_verified": rng.random() < 0.9, "suspended": rng.random() < 0.02}
        out.append(entity("Borrower", f"borrower-{i:06d}", attrs))
    return out


def loans_and_documents(counts: dict[str, int], rng: random.Random) -> list[JsonDict]:
    """Loans of borrowers (half with an officer) and documents attached to loans."""
    out = []
    for i in range(counts["Loan"]):
        attrs: JsonDict = {"kind": rng.choice(("personal", "auto", "home"))}
        attrs |= {"amount": rng.randrange(1000, 500_000), "status": rng.choice(STATUSES)}
        attrs["owner"] = ref("Borrower", f"borrower-{rng.randrange(counts['Borrower']):06d}")
        attrs["partner"] = ref("Partner", f"partner-{rng.randrange(counts['Partner']):03d}")
        if i % 2 == 0:
            attrs["officer"] = ref("Employee", f"emp-{rng.randrange(counts['Employee']):06d}")
        out.append(entity("Loan", f"loan-{i:07d}", attrs))
    for i in range(counts["Document"]):
        loan = f"loan-{rng.randrange(counts['Loan']):07d}"
        attrs = {"loan": ref("Loan", loan), "classification": rng.choice(("general", "pii"))}
        out.append(entity("Document", f"doc-{i:07d}", attrs, [uid("Loan", loan)]))
    return out


def synthetic_entities(total: int, seed: int = 7) -> list[JsonDict]:
    """``total`` Cedar JSON entities conforming to policies/lending/schema.cedarschema."""
    rng = random.Random(seed)
    counts = entity_counts(total)
    entities = people(counts, rng) + loans_and_documents(counts, rng)
    assert len(entities) == total
    return entities


def write_store_copy(workdir: Path, entities: list[JsonDict]) -> Path:
    """A policy-stores folder holding a copy of lending with the synthetic entities.json."""
    stores = workdir / "stores"
    ignore = shutil.ignore_patterns("tests", "entities.json")
    shutil.copytree(POLICIES / STORE, stores / STORE, ignore=ignore)
    (stores / STORE / "entities.json").write_text(json.dumps(entities), encoding="utf-8")
    return stores


LOAD_LINE = re.compile(r"(\d+) entities in ([\d.]+)s \(([\d,]+)/s\), version (\d+)")


def cli_load(stores: Path, redis: RedisProcess) -> JsonDict:
    """``verdict entities load`` as a user runs it; its own entities/s plus wall time."""
    argv = [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores)]
    argv += ["--store", STORE, "--redis-url", redis.url]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    match = LOAD_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"entities load failed: {done.stdout}{done.stderr}")
    count = int(match[1])
    return {
        "entities": count,
        "load_seconds": float(match[2]),
        "entities_per_s": float(match[3].replace(",", "")),
        "version": int(match[4]),
        "wall_seconds": wall,
        "entities_per_s_wall": count / wall,
        "hlen": hlen(redis),
    }


async def inprocess_load(stores: Path, redis: RedisProcess) -> JsonDict:
    """Parse+validate, then ``load_entities`` on a RedisEntityStore, timed separately."""
    store_snapshot = load_policy_stores(stores, STORE).resolve(STORE)
    assert store_snapshot.entities_file is not None
    started = time.perf_counter()
    entities = read_entities_file(store_snapshot.entities_file, store_snapshot.schema)
    read_seconds = time.perf_counter() - started
    settings = Settings(redis_url=redis.url, redis_timeout_seconds=5.0)
    store = RedisEntityStore(make_client(settings), EntityCache(0, 0), op_timeout=5.0)
    try:
        await store.prepare()
        started = time.perf_counter()
        version = await load_entities(store, STORE, list(entities.values()))
        load_seconds = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "entities": len(entities),
        "read_validate_seconds": read_seconds,
        "load_seconds": load_seconds,
        "entities_per_s": len(entities) / load_seconds,
        "version": version,
        "round_trips": store.round_trips,
        "hlen": hlen(redis),
    }


def bulk_phase(plan: Plan, workdir: Path) -> JsonDict:
    """Generate, then load through the CLI and in process into a fresh Redis of its own."""
    entities = synthetic_entities(plan.bulk_entities)
    stores = write_store_copy(workdir, entities)
    with redis_server(workdir / "redis-bulk") as redis:
        cli = cli_load(stores, redis)
        redis.cli("FLUSHALL")
        inproc = asyncio.run(inprocess_load(stores, redis))
        memory = redis.cli("INFO", "memory")
    used = re.search(r"used_memory_human:(\S+)", memory)
    return {
        "entities": plan.bulk_entities,
        "counts": entity_counts(plan.bulk_entities),
        "file_mb": (stores / STORE / "entities.json").stat().st_size / 1e6,
        "cli": cli,
        "in_process": inproc,
        "redis_used_memory": used[1] if used else None,
    }


# --- summaries ---------------------------------------------------------------------------


def median(runs: Sequence[JsonDict], key: str) -> float:
    """Median of ``key`` over runs (0.0 when there are none)."""
    return statistics.median(run[key] for run in runs) if runs else 0.0


def select(runs: Sequence[JsonDict], **match: Any) -> list[JsonDict]:
    """Runs whose fields equal ``match``."""
    return [run for run in runs if all(run.get(k) == v for k, v in match.items())]


def is_quiet(run: JsonDict, plan: Plan) -> bool:
    """Whether other processes left the machine alone during this run."""
    return bool(run["other_cpu_share"] <= plan.quiet_threshold)


def quiet_or_all(runs: list[JsonDict], plan: Plan) -> tuple[list[JsonDict], bool]:
    """The runs measured while the machine was quiet, or all of them if none was."""
    quiet = [run for run in runs if is_quiet(run, plan)]
    return (quiet, True) if quiet else (runs, False)


def figures(runs: Sequence[JsonDict], names: Sequence[str], plan: Plan, unit: str) -> JsonDict:
    """Median over the quiet rounds of every figure, by scenario and concurrency."""
    keys = [f"p50_{unit}", f"p90_{unit}", f"p99_{unit}", f"mean_{unit}", "throughput"]
    out: JsonDict = {}
    for name in names:
        for level in plan.levels:
            chosen, quiet = quiet_or_all(select(runs, scenario=name, concurrency=level), plan)
            cell = {key: median(chosen, key) for key in keys}
            extra = [key for key in FIGURE_EXTRAS if chosen and key in chosen[0]]
            cell |= {key: median(chosen, key) for key in extra}
            cell |= {"runs_used": len(chosen), "quiet_only": quiet}
            out.setdefault(name, {})[str(level)] = cell
    return out


def round_pairs(
    runs: Sequence[JsonDict], a: str, b: str, level: int
) -> list[tuple[JsonDict, JsonDict]]:
    """(run of A, run of B) at ``level`` measured in the same round."""
    pairs = []
    for run_a in select(runs, scenario=a, concurrency=level):
        run_b = select(runs, scenario=b, concurrency=level, round=run_a["round"])
        if run_b:
            pairs.append((run_a, run_b[0]))
    return pairs


def pair_ratios(pairs: Sequence[tuple[JsonDict, JsonDict]], unit: str) -> JsonDict:
    """Median over rounds of the per-round A/B ratios of p50, p99 and throughput."""
    cell: JsonDict = {}
    for key, field in (
        ("p50", f"p50_{unit}"),
        ("p99", f"p99_{unit}"),
        ("throughput", "throughput"),
    ):
        cell[key] = statistics.median(ra[field] / rb[field] for ra, rb in pairs)
    return cell


def ratios(runs: Sequence[JsonDict], plan: Plan, unit: str) -> JsonDict:
    """Side-by-side ratios (A/B) from rounds where both runs were quiet (else from all)."""
    out: JsonDict = {}
    for a, b in RATIOS:
        for level in plan.levels:
            pairs = round_pairs(runs, a, b, level)
            quiet = [(x, y) for x, y in pairs if is_quiet(x, plan) and is_quiet(y, plan)]
            used = quiet or pairs
            if used:
                cell = pair_ratios(used, unit) | {
                    "rounds_used": len(used),
                    "quiet_only": bool(quiet),
                }
                out.setdefault(f"{a}/{b}", {})[str(level)] = cell
    return out


def channel_check(runs: Sequence[JsonDict], plan: Plan) -> JsonDict:
    """Floor and memory at the throughput level with each channel mode, and their ratio."""
    out: JsonDict = {}
    for mode in ("shared", "per-worker"):
        cell: JsonDict = {}
        for name in ("noop", "memory"):
            chosen = select(runs, channels=mode, concurrency=plan.concurrency, scenario=name)
            used, _ = quiet_or_all(chosen, plan)
            cell[name] = {key: median(used, key) for key in ("p50_ms", "throughput")}
        noop_rps = cell["noop"]["throughput"]
        cell["memory/noop_throughput"] = cell["memory"]["throughput"] / noop_rps if noop_rps else 0
        out[mode] = cell
    return out


def claims(grpc: JsonDict, engine: JsonDict, plan: Plan) -> JsonDict:
    """The issue's two claims, checked at both levels."""
    top = str(plan.concurrency)
    hit = {
        "engine_p50_ratio_c1": engine["ratios"]["redis-hit/memory"]["1"]["p50"],
        "grpc_p50_ratio_c1": grpc["ratios"]["redis-hit/memory"]["1"]["p50"],
        "grpc_throughput_ratio_top": grpc["ratios"]["redis-hit/memory"][top]["throughput"],
    }
    hit["holds_engine"] = hit["engine_p50_ratio_c1"] <= 1.1
    hit["holds_grpc_latency"] = hit["grpc_p50_ratio_c1"] <= 1.1
    hit["holds_grpc_throughput"] = hit["grpc_throughput_ratio_top"] >= 1 / 1.1
    miss_engine = engine["figures"]["redis-miss"]["1"]["round_trips_per_decision"]
    miss_server = grpc["figures"]["redis-miss"]["1"]["evalsha_per_decision"]
    miss = {
        "engine_round_trips_per_decision": miss_engine,
        "server_evalsha_per_decision": miss_server,
        "server_commands_incl_lua_per_decision": grpc["figures"]["redis-miss"]["1"][
            "commands_incl_lua_per_decision"
        ],
        "server_lua_us_per_miss": grpc["figures"]["redis-miss"]["1"]["evalsha_server_us"],
        "hit_server_evalsha_per_decision": grpc["figures"]["redis-hit"]["1"][
            "evalsha_per_decision"
        ],
        "holds": 1 <= miss_engine <= 2 and 1 <= miss_server <= 2,
    }
    return {"hit_within_1_1x_memory": hit, "miss_one_or_two_round_trips": miss}


def summarize(plan: Plan, grpc_runs: list[JsonDict], engine_runs: list[JsonDict]) -> JsonDict:
    """Medians, ratios and claims for both levels."""
    main = select(grpc_runs, channels=plan.channels)
    grpc = {
        "channels": plan.channels,
        "figures": figures(main, SCENARIOS, plan, "ms"),
        "ratios": ratios(main, plan, "ms"),
        "channel_check": channel_check(grpc_runs, plan),
        "runs": grpc_runs,
    }
    engine = {
        "figures": figures(engine_runs, ENGINE_STORES, plan, "us"),
        "ratios": ratios(engine_runs, plan, "us"),
        "runs": engine_runs,
    }
    return {"grpc": grpc, "engine": engine, "claims": claims(grpc, engine, plan)}


# --- machine, output ---------------------------------------------------------------------


def command_output(argv: Sequence[str]) -> str:
    """stdout of a short command ('' if it fails)."""
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def machine_info() -> JsonDict:
    """Where and with what the figures were measured."""
    redis_version = re.search(r"v=(\S+)", command_output([REDIS_SERVER, "--version"]))
    dirty = command_output(["git", "status", "--porcelain", "--", "src"])
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cedarpy": metadata.version("cedarpy"),
        "grpcio": metadata.version("grpcio"),
        "redis_py": metadata.version("redis"),
        "redis_server": redis_version[1] if redis_version else None,
        "git_commit": command_output(["git", "rev-parse", "--short", "HEAD"]),
        "src_uncommitted_changes": bool(dirty),
        "loadavg_start": list(os.getloadavg()),
    }


COLORS = {"noop": "#999999", "memory": "#4c72b0", "redis-hit": "#55a868", "redis-miss": "#c44e52"}


def ratio_to_memory(ratios: JsonDict, name: str, key: str, level: str) -> float:
    """The side-by-side ratio of ``name`` to the in-memory store (as in the tables)."""
    if name == "noop":
        return 1 / float(ratios["memory/noop"][level][key])
    return float(ratios[f"{name}/memory"][level][key])


def tick_labels(ratios: JsonDict, names: Sequence[str], key: str, level: str) -> list[str]:
    """Scenario names with their ratio to the in-memory store."""
    return [
        name
        if name == "memory"
        else f"{name}\n{ratio_to_memory(ratios, name, key, level):.2f}x memory"
        for name in names
    ]


def latency_panel(ax: Any, level: JsonDict, names: Sequence[str], unit: str, title: str) -> None:
    """p50 and p99 at concurrency 1 per scenario, with the 1.1x in-memory p50 line."""
    figs = level["figures"]
    p50 = [figs[n]["1"][f"p50_{unit}"] for n in names]
    p99 = [figs[n]["1"][f"p99_{unit}"] for n in names]
    colors = [COLORS[n] for n in names]
    xs = range(len(names))
    low = ax.bar([x - 0.2 for x in xs], p50, 0.4, color=colors, label="p50")
    high = ax.bar([x + 0.2 for x in xs], p99, 0.4, color=colors, alpha=0.4, label="p99")
    for bars, values in ((low, p50), (high, p99)):
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
    limit = 1.1 * figs["memory"]["1"][f"p50_{unit}"]
    line = ax.axhline(limit, ls="--", lw=0.8, color=COLORS["memory"])
    ax.set_xticks(list(xs), tick_labels(level["ratios"], names, "p50", "1"), fontsize=7)
    ax.set_title(title, fontsize=10)
    handles = [Patch(color="#555555"), Patch(color="#555555", alpha=0.4), line]
    labels = ["p50 (solid)", "p99 (light)", "1.1 x memory p50"]
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    ax.margins(y=0.15)


def values_panel(
    ax: Any, labels: Sequence[str], values: Sequence[float], colors: Sequence[str], title: str
) -> None:
    """One labelled bar chart of rates."""
    bars = ax.bar(range(len(labels)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)


def bulk_panel(ax: Any, bulk: JsonDict) -> None:
    """Entities/s of the Redis writes and of the whole command, and of parse+validate."""
    inproc = bulk["in_process"]
    labels = ["CLI:\nRedis writes", "CLI:\nwhole command", "in-process:\nRedis writes"]
    labels.append("in-process:\nparse+validate")
    values = [bulk["cli"]["entities_per_s"], bulk["cli"]["entities_per_s_wall"]]
    values += [inproc["entities_per_s"], inproc["entities"] / inproc["read_validate_seconds"]]
    colors = ["#c44e52", "#999999", "#c44e52", "#999999"]
    values_panel(ax, labels, values, colors, f"bulk load, {bulk['entities']:,} entities (/s)")


def plot_title(report: JsonDict, plan: Plan) -> str:
    """What was measured where, and how busy the machine was with other work."""
    machine = report["machine"]
    runs = report["grpc"]["runs"] + report["engine"]["runs"]
    quiet = sum(is_quiet(run, plan) for run in runs)
    return (
        f"Verdict entity store: medians over {plan.rounds} interleaved round(s), quiet runs "
        f"only ({quiet} of {len(runs)} runs had other processes at <= "
        f"{plan.quiet_threshold:.0%} CPU)\n{machine['cpu_count']} CPUs, loopback, "
        f"Python {machine['python']}, cedarpy {machine['cedarpy']}, grpcio {machine['grpcio']}, "
        f"redis-server {machine['redis_server']}"
    )


def write_plot(report: JsonDict, plan: Plan, path: Path) -> None:
    """gRPC latency (c=1) and throughput (c=C), engine latency, bulk load rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grpc, top = report["grpc"], str(plan.concurrency)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    latency_panel(axes[0][0], grpc, SCENARIOS, "ms", "end to end over gRPC, concurrency 1 (ms)")
    rps = [grpc["figures"][n][top]["throughput"] for n in SCENARIOS]
    labels = tick_labels(grpc["ratios"], SCENARIOS, "throughput", top)
    title = f"end to end over gRPC, concurrency {top} (req/s)"
    values_panel(axes[0][1], labels, rps, [COLORS[n] for n in SCENARIOS], title)
    title = "in process: authorize(), concurrency 1 (µs)"
    latency_panel(axes[1][0], report["engine"], ENGINE_STORES, "us", title)
    if report.get("bulk"):
        bulk_panel(axes[1][1], report["bulk"])
    fig.suptitle(plot_title(report, plan), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def progress(message: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table_rows(figs: JsonDict, names: Sequence[str], plan: Plan, unit: str) -> list[str]:
    """Markdown rows: latency at concurrency 1 and C, throughput at C, Redis calls/decision."""
    top = str(plan.concurrency)
    rows = []
    for name in names:
        one, many = figs[name]["1"], figs[name][top]
        trips = one.get("evalsha_per_decision", one.get("round_trips_per_decision", 0.0))
        used = f"{one['runs_used']}+{many['runs_used']}"
        used += "" if one["quiet_only"] and many["quiet_only"] else " (contended)"
        rows.append(
            f"| {name} | {one[f'p50_{unit}']:.3g} | {one[f'p99_{unit}']:.3g} "
            f"| {one['throughput']:,.0f} | {many[f'p50_{unit}']:.3g} | {many[f'p99_{unit}']:.3g} "
            f"| {many['throughput']:,.0f} | {trips:.2f} | {used} |"
        )
    return rows


def print_report(report: JsonDict, plan: Plan) -> None:
    """The figures as markdown tables on stdout (pasted into benchmarks/README.md)."""
    c = plan.concurrency
    for level, unit in (("grpc", "ms"), ("engine", "us")):
        print(
            f"\n{level} ({unit}) | p50 c=1 | p99 c=1 | req/s c=1 | p50 c={c} | p99 c={c} "
            f"| req/s c={c} | Redis calls/decision | quiet runs used"
        )
        names = SCENARIOS if level == "grpc" else ENGINE_STORES
        print("\n".join(table_rows(report[level]["figures"], names, plan, unit)))
        for pair, cells in report[level]["ratios"].items():
            text = ", ".join(
                f"c={lvl}: p50 {v['p50']:.2f}x p99 {v['p99']:.2f}x req/s {v['throughput']:.2f}x"
                for lvl, v in cells.items()
            )
            print(f"  {pair}: {text}")
    print("\nchannel check:", json.dumps(report["grpc"]["channel_check"], indent=None))
    print("claims:", json.dumps(report["claims"], indent=2))
    if report["bulk"]:
        bulk = report["bulk"]
        print(
            f"bulk: CLI {bulk['cli']['entities_per_s']:,.0f}/s (wall "
            f"{bulk['cli']['entities_per_s_wall']:,.0f}/s), in-process "
            f"{bulk['in_process']['entities_per_s']:,.0f}/s, HLEN {bulk['cli']['hlen']}"
            f"/{bulk['in_process']['hlen']}"
        )


def measure(plan: Plan, workdir: Path) -> tuple[list[JsonDict], list[JsonDict], JsonDict | None]:
    """Engine phase, then gRPC phase (one Redis), then bulk load (a fresh Redis)."""
    with redis_server(workdir / "redis") as redis:
        assert redis.process is not None
        PIDS.append(redis.process.pid)
        progress(f"redis-server at {redis.url}; engine phase")
        engine_runs = asyncio.run(engine_phase(plan, redis.url))
        with running_servers(redis.url, workdir) as servers:
            progress("gRPC phase: servers " + ", ".join(s.target for s in servers.values()))
            PIDS.extend(server.process.pid for server in servers.values())
            grpc_runs = asyncio.run(grpc_phase(plan, servers, redis))
    bulk = None
    if plan.bulk_entities:
        progress(f"bulk load of {plan.bulk_entities:,} entities")
        bulk = bulk_phase(plan, workdir)
    return engine_runs, grpc_runs, bulk


def main(argv: Sequence[str] | None = None) -> int:
    """Run every phase, write JSON + PNG into ``--out``, print the tables."""
    plan = parse_args(argv)
    configure_logging("warning", "json")
    started = time.perf_counter()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="verdict-bench-") as tmp:
        engine_runs, grpc_runs, bulk = measure(plan, Path(tmp))
    machine["loadavg_end"] = list(os.getloadavg())
    report: JsonDict = {"machine": machine, "plan": {**asdict(plan), "out": str(plan.out)}}
    report |= summarize(plan, grpc_runs, engine_runs) | {"bulk": bulk}
    report["seconds"] = time.perf_counter() - started
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "entity_store.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(report, plan, plan.out / "entity_store.png")
    print_report(report, plan)
    progress(f"done in {report['seconds']:.0f} s; wrote {plan.out}/entity_store.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
