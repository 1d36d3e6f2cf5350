"""The hot path side by side: floor, lending (memory, Redis, workers), policies, batch, Cerbos."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from benchmarks.hot_path import cerbos, gen_store, mixes, procs, report
from benchmarks.hot_path.load import Budget, StubMethod, measure
from benchmarks.hot_path.procs import Proc
from tests.cases import lending_cases
from tests.redis_support import RedisProcess, free_port
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
POLICIES = ROOT / "policies"
SERVE_TIMEOUT = 60.0
POLICY_SERVE_TIMEOUT = 600.0  # 100,000 policies took ~70 s to load on main (issue 9)
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What to measure and for how long."""

    quick: bool
    rounds: int
    budget: Budget
    policy_budget: Budget
    curve_levels: tuple[int, ...]  # latency vs concurrency
    levels: tuple[int, int]  # latency (1) and throughput (16)
    policy_counts: tuple[int, ...]
    condition_counts: tuple[int, ...]
    variants: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    workers: int  # N for "workers N" (0: the CLI has no --workers)
    ceiling_clients: int
    ceiling_seconds: float
    cerbos: bool
    equivalence_contexts: int
    profile: bool
    profile_only: bool
    profile_seconds: float
    profile_native: bool
    update_readme: bool
    out: Path
    from_json: Path | None


def parse_args(argv: Sequence[str] | None) -> Plan:
    """Command line; ``--quick`` is a ~1 minute smoke run of every part."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_hot_path",
        description=__doc__ + " Run from the repository root; loopback only.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the core scenarios")
    parser.add_argument("--seconds", type=float, help="cap on one measured run (s)")
    parser.add_argument("--requests", type=int, help="cap on one measured run (requests)")
    parser.add_argument(
        "--policy-counts", help="comma-separated (default 10,1000,10000,100000; quick 10,1000)"
    )
    parser.add_argument(
        "--condition-counts",
        help="policy counts of the condition variant (default 10,1000,10000: its 100,000 "
        "store took 170 s to load and 2.4 GB on main; quick 10,1000)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N of workers N")
    parser.add_argument("--no-cerbos", action="store_true", help="skip the Cerbos peer")
    parser.add_argument(
        "--equivalence-contexts",
        type=int,
        help="contexts of the Verdict/Cerbos equivalence check (default 5; quick 1; 0 skips)",
    )
    parser.add_argument("--profile", action="store_true", help="also record a py-spy flame graph")
    parser.add_argument("--profile-only", action="store_true", help="only the flame graph")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native: also unwind C, Cython (grpc) and Rust (cedarpy) frames",
    )
    parser.add_argument("--out", type=Path, help="results folder (quick: a temp folder)")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: redraw the tables, plots and README block from a results JSON",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not rewrite the table in benchmarks/README.md"
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    budget = Budget(
        requests=args.requests or (400 if quick else 3000),
        seconds=args.seconds or (0.5 if quick else 1.2),
        warmup_requests=50 if quick else 300,
        warmup_seconds=0.2 if quick else 0.5,
    )
    policy_budget = replace(budget, warmup_requests=20, warmup_seconds=0.3)
    default_counts = "10,1000" if quick else "10,1000,10000,100000"
    counts = tuple(int(c) for c in (args.policy_counts or default_counts).split(","))
    default_condition = "10,1000" if quick else "10,1000,10000"
    condition = tuple(int(c) for c in (args.condition_counts or default_condition).split(","))
    serve = procs.python_argv("verdict", "serve")
    workers = args.workers if procs.has_flag(serve, "--workers") else 0
    out = args.out or (Path(tempfile.gettempdir()) / "verdict-hot-path-quick" if quick else RESULTS)
    return Plan(
        quick=quick,
        rounds=args.rounds or (1 if quick else 3),
        budget=budget,
        policy_budget=policy_budget,
        curve_levels=(1, 4, 16) if quick else (1, 4, 16, 64),
        levels=(1, 16),
        policy_counts=counts,
        condition_counts=condition,
        variants=gen_store.VARIANTS,
        batch_sizes=(1, 10, 100),
        workers=workers if workers > 1 else 0,
        ceiling_clients=2,
        ceiling_seconds=0.5 if quick else 1.5,
        cerbos=not args.no_cerbos,
        equivalence_contexts=(
            args.equivalence_contexts
            if args.equivalence_contexts is not None
            else 1
            if quick
            else 5
        ),
        profile=args.profile or args.profile_only,
        profile_only=args.profile_only,
        profile_seconds=3.0 if quick else args.profile_seconds,
        profile_native=args.profile_native,
        update_readme=not (args.no_readme or quick or args.out),
        out=out,
        from_json=args.from_json,
    )


def progress(message: str) -> None:
    """One line to stderr, flushed."""
    print(f"[hot_path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- servers -------------------------------------------------------------------------------


def verdict_argv(stores: Path, store: str, port: int, workers: int | None) -> list[str]:
    """``verdict serve``; ``--workers`` only when the CLI has it (``workers`` not None)."""
    argv = procs.python_argv("verdict", "serve", "--stores", str(stores))
    argv += ["--default-store", store, "--listen", f"127.0.0.1:{port}"]
    return argv if workers is None else [*argv, "--workers", str(workers)]


def verdict_env(**extra: str) -> dict[str, str]:
    """The servers' environment: warnings only."""
    return {**os.environ, "VERDICT_LOG_LEVEL": "warning", **extra}


@dataclass(frozen=True)
class CoreServer:
    """A core scenario's server: what it serves and how it was started."""

    name: str
    kind: str  # noop | verdict | cerbos
    workers: int  # processes answering (1 for noop; Cerbos: its own goroutines)


def core_servers(plan: Plan) -> list[CoreServer]:
    """The servers of the side-by-side scenarios."""
    out = [CoreServer("floor", "noop", 1), CoreServer("memory", "verdict", 1)]
    if plan.workers:
        out.append(CoreServer(f"memory-w{plan.workers}", "verdict", plan.workers))
    out += [CoreServer("redis-hit", "verdict", 1), CoreServer("redis-miss", "verdict", 1)]
    if plan.workers:
        out.append(CoreServer(f"redis-hit-w{plan.workers}", "verdict", plan.workers))
    if plan.cerbos:
        out.append(CoreServer("cerbos", "cerbos", 1))
    return out


def spawn_core(server: CoreServer, plan: Plan, redis: RedisProcess, workdir: Path) -> Proc:
    """Start one core server on a free loopback port."""
    port = free_port()
    if server.kind == "noop":
        argv = procs.python_argv("benchmarks.noop_server", "--listen", f"127.0.0.1:{port}")
        return procs.spawn(server.name, argv, port, workdir, verdict_env())
    if server.kind == "cerbos":
        binary = cerbos.ensure_installed()
        config = cerbos.write_config(workdir / "cerbos", port, free_port())
        return procs.spawn(
            server.name, cerbos.argv(binary, config), port, workdir, cerbos.environment()
        )
    workers = server.workers if plan.workers else None
    argv = verdict_argv(POLICIES, mixes.LENDING, port, workers)
    env = verdict_env()
    if server.name.startswith("redis"):
        argv += ["--redis-url", redis.url]
    if server.name.startswith("redis-miss"):
        env["VERDICT_CACHE_MAX_ENTRIES"] = "0"  # every decision reads Redis
    return procs.spawn(server.name, argv, port, workdir, env)


@contextlib.contextmanager
def started(servers: Sequence[Proc]) -> Iterator[None]:
    """Stop every server on the way out, whatever happened."""
    try:
        yield
    finally:
        for proc in servers:
            procs.stop(proc)


def load_redis_entities(redis: RedisProcess) -> float:
    """``verdict entities load`` of the lending store into ``redis``; returns seconds."""
    began = time.monotonic()
    argv = procs.python_argv("verdict", "entities", "load", "--stores", str(POLICIES))
    argv += ["--store", mixes.LENDING, "--redis-url", redis.url]
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=120)
    return time.monotonic() - began


# --- answers checked before timing ---------------------------------------------------------


async def check_verdict(proc: Proc) -> None:
    """Every lending case answered as expected (also warms a Redis server's cache)."""
    cases = lending_cases()
    async with grpc.aio.insecure_channel(proc.target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        for case, message in zip(cases, mixes.lending_messages(cases), strict=True):
            reply = await stub.IsAuthorized(message, timeout=10)
            if not mixes.right_answer(case, reply):
                raise RuntimeError(f"{proc.name}: wrong answer for {case}: {reply}")
        for size in (10, 100):
            batch = mixes.batch_messages(size, count=1)[0]
            answer = await stub.BatchAuthorize(batch, timeout=30)
            for item, result in zip(batch.requests, answer.results, strict=True):
                index = mixes.lending_messages().index(item)
                if result.WhichOneof("outcome") != "response" or not mixes.right_answer(
                    cases[index], result.response
                ):
                    raise RuntimeError(f"{proc.name}: wrong batch answer for {cases[index]}")


async def check_cerbos(proc: Proc, api: cerbos.CerbosApi) -> None:
    """Every lending case gets the expected effect from Cerbos (waits for it to serve)."""
    cases = lending_cases()
    requests = cerbos.requests(api, cases)
    deadline = time.monotonic() + SERVE_TIMEOUT
    async with grpc.aio.insecure_channel(proc.target) as channel:
        call = api.method(channel)
        while True:
            if proc.process.poll() is not None:
                raise RuntimeError(f"cerbos exited:\n{proc.log.read_text()[-2000:]}")
            try:
                await call(requests[0], timeout=2)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        proc.ready_s = time.monotonic() - proc.started
        for case, request in zip(cases, requests, strict=True):
            reply = await call(request, timeout=5)
            if cerbos.allowed(reply, case.action.id) != (case.expect == "allow"):
                raise RuntimeError(f"cerbos: wrong effect for {case}: {reply}")


async def equivalence(memory: Proc, peer: Proc, api: cerbos.CerbosApi, contexts: int) -> JsonDict:
    """Verdict (memory store) and Cerbos decide every request the lending schema allows, under
    several contexts, the same way; a difference aborts the run (the comparison would be void)."""
    cases = cerbos.all_cases(contexts)
    verdict_requests = mixes.lending_messages(cases)
    cerbos_requests = cerbos.requests(api, cases)
    limit = asyncio.Semaphore(16)
    async with (
        grpc.aio.insecure_channel(memory.target) as v_channel,
        grpc.aio.insecure_channel(peer.target) as c_channel,
    ):
        stub = pb_grpc.AuthorizationServiceStub(v_channel)
        call = api.method(c_channel)

        async def one(index: int) -> tuple[bool, bool]:
            async with limit:
                v = await stub.IsAuthorized(verdict_requests[index], timeout=30)
                c = await call(cerbos_requests[index], timeout=30)
            return v.decision == pb.DECISION_ALLOW, cerbos.allowed(c, cases[index].action.id)

        answers = await asyncio.gather(*(one(i) for i in range(len(cases))))
    differ = [str(cases[i]) + f" {cases[i].context}" for i, (v, c) in enumerate(answers) if v != c]
    if differ:
        raise RuntimeError(f"Verdict and Cerbos differ on {len(differ)} requests: {differ[:5]}")
    allows = sum(v for v, _ in answers)
    progress(f"equivalence: {len(cases)} requests, {allows} allowed, same decisions")
    return {"requests": len(cases), "allowed": allows, "contexts": contexts, "differ": 0}


async def check_generated(proc: Proc, policies: int) -> JsonDict:
    """The generated mix: wrong decisions abort; errors (non-OK statuses) are counted."""
    messages, expected = gen_store.messages(policies)
    errors, first, checked = 0, "", 0
    deadline = time.monotonic() + 20.0  # at 100,000 policies one decision can take seconds
    async with grpc.aio.insecure_channel(proc.target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        for message, allow in zip(messages, expected, strict=True):
            if checked >= 4 and time.monotonic() > deadline:
                break
            checked += 1
            try:
                reply = await stub.IsAuthorized(message, timeout=60)
            except grpc.aio.AioRpcError as exc:
                errors += 1
                first = first or f"{exc.code().name}: {exc.details()}"[:200]
                continue
            if (reply.decision == pb.DECISION_ALLOW) != allow:
                raise RuntimeError(f"{proc.name}: wrong decision for {message}")
    return {"check_requests": checked, "check_errors": errors, "check_first_error": first}


# --- phases --------------------------------------------------------------------------------


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """``items`` starting at index ``by`` (each round runs the scenarios in a new order)."""
    shift = by % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Run:
    """One measured configuration of the core phase."""

    scenario: str
    server: str
    concurrency: int
    batch: int = 0  # items per BatchAuthorize; 0: IsAuthorized


def core_runs(plan: Plan, servers: Sequence[CoreServer]) -> list[Run]:
    """Every configuration measured in one round."""
    curve = {"floor", "memory", "cerbos", f"memory-w{plan.workers}"}
    runs = []
    for server in servers:
        levels = plan.curve_levels if server.name in curve else plan.levels
        runs += [Run(server.name, server.name, c) for c in levels]
    batch_servers = ["memory", *([f"memory-w{plan.workers}"] if plan.workers else [])]
    for name in batch_servers:
        for size in plan.batch_sizes:
            runs += [Run(f"batch{size}-{name}", name, c, size) for c in plan.levels]
    return runs


def pids_of(proc: Proc) -> Callable[[], list[int]]:
    """``proc.pids`` read at each call (bound to this ``proc``, not to a loop variable)."""
    return lambda: proc.pids


async def core_phase(
    plan: Plan, running: dict[str, Proc], api: cerbos.CerbosApi | None
) -> list[JsonDict]:
    """The interleaved rounds of every core configuration."""
    lending = mixes.lending_messages()
    cerbos_requests = cerbos.requests(api, lending_cases()) if api is not None else []
    batches = {size: mixes.batch_messages(size) for size in plan.batch_sizes}
    runs = core_runs(plan, [s for s in core_servers(plan) if s.name in running])
    records: list[JsonDict] = []
    for round_no in range(plan.rounds):
        for run in rotated(runs, round_no * 7):
            proc = running[run.server]
            method: StubMethod
            messages: Sequence[Message]
            if run.server == "cerbos":
                assert api is not None
                method, messages = api.method, cerbos_requests
            elif run.batch:
                method, messages = mixes.batch_authorize, batches[run.batch]
            else:
                method, messages = mixes.is_authorized, lending
            record = await measure(
                proc.target,
                method,
                messages,
                run.concurrency,
                plan.budget,
                pids_of(proc),
            )
            records.append({**asdict(run), "round": round_no, **record})
        progress(f"core round {round_no + 1}/{plan.rounds} done")
    return records


async def sample_cpu(
    pids: Sequence[int], done: asyncio.Event, samples: list[tuple[float, float, float]]
) -> None:
    """Every 50 ms: (time.time(), CPU seconds of ``pids``, machine busy seconds)."""
    while not done.is_set():
        samples.append((time.time(), procs.cpu_seconds(pids), procs.machine_busy_seconds()))
        await asyncio.sleep(0.05)


async def client_processes(plan: Plan, proc: Proc) -> JsonDict:
    """K client processes (c=16 split between them) against ``proc``, started together."""
    per = max(1, 16 // plan.ceiling_clients)
    start_at = time.time() + 5.0  # imports and warm-up of each client first
    argv = procs.python_argv("benchmarks.hot_path.load", "--target", proc.target)
    argv += ["--concurrency", str(per), "--seconds", str(plan.ceiling_seconds)]
    argv += ["--start-at", str(start_at)]
    clients = [
        procs.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(plan.ceiling_clients)
    ]
    samples: list[tuple[float, float, float]] = []
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_cpu(proc.pids, done, samples))
    results = []
    try:
        for client in clients:
            stdout, stderr = await asyncio.to_thread(client.communicate, timeout=120)
            if client.returncode != 0:
                raise RuntimeError(f"client process failed: {stderr.decode()[-1500:]}")
            results.append(json.loads(stdout))
    finally:
        done.set()
        await sampler
    # The clients' measured phases, and the server's and machine's CPU over their union.
    first = min(r["started_at"] for r in results)
    last = max(r["started_at"] + r["seconds"] for r in results)
    overlap = min(r["started_at"] + r["seconds"] for r in results) - max(
        r["started_at"] for r in results
    )
    inside = [(cpu, busy) for at, cpu, busy in samples if first <= at <= last] or [(0.0, 0.0)]
    wall = max(last - first, 1e-9)
    server_cpu = inside[-1][0] - inside[0][0]
    client_cpu = sum(r["client_cpu_s"] for r in results)
    other_cpu = max(0.0, inside[-1][1] - inside[0][1] - server_cpu - client_cpu)
    return {
        "server": proc.name,
        "client_processes": plan.ceiling_clients,
        "concurrency": per * plan.ceiling_clients,
        "throughput": sum(r["throughput"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "p50_us": max(r["p50_ms"] for r in results) * 1000.0,
        "client_cores": client_cpu / wall,
        "server_cores": server_cpu / wall,
        "other_cores": other_cpu / wall,
        "overlap_share": max(0.0, overlap) / min(r["seconds"] for r in results),
    }


async def ceiling_phase(plan: Plan, running: dict[str, Proc]) -> list[JsonDict]:
    """The load generator's own ceiling: c=16 from one client process, then from K processes,
    back to back, against the floor and the memory server."""
    out = []
    budget = replace(plan.budget, requests=10**9, seconds=plan.ceiling_seconds)
    for name in ("floor", "memory"):
        proc = running[name]
        single = await measure(
            proc.target,
            mixes.is_authorized,
            mixes.lending_messages(),
            16,
            budget,
            pids_of(proc),
        )
        several = await client_processes(plan, proc)
        out.append({**several, "one_process": single})
        progress(
            f"ceiling vs {name}: {single['throughput']:,.0f}/s from one client process, "
            f"{several['throughput']:,.0f}/s from {plan.ceiling_clients}"
        )
    return out


async def start_generated(
    plan: Plan, workdir: Path, variant: str, count: int
) -> tuple[Proc, JsonDict]:
    """Write a generated store and serve it (one worker); returns the server once it serves,
    with its startup time, RSS and the check of its answers."""
    stores = workdir / f"gen-{variant}-{count}"
    began = time.monotonic()
    gen_store.write_store(stores, count, variant)
    record: JsonDict = {
        "variant": variant,
        "policies": count,
        "generate_s": time.monotonic() - began,
    }
    port = free_port()
    argv = verdict_argv(stores, gen_store.STORE, port, 1 if plan.workers else None)
    proc = procs.spawn(f"gen-{variant}-{count}", argv, port, workdir, verdict_env())
    try:
        await procs.wait_health(proc, POLICY_SERVE_TIMEOUT)
        record["load_s"] = proc.ready_s
        record["rss_kib_ready"], record["peak_rss_kib_ready"] = procs.memory_kib(proc.pids)
        record |= await check_generated(proc, count)
    except BaseException:
        procs.stop(proc)
        raise
    return proc, record


async def measure_generated(
    plan: Plan, proc: Proc, count: int, levels: Sequence[int]
) -> dict[int, JsonDict]:
    """The generated mix at each concurrency level."""
    messages, _ = gen_store.messages(count)
    return {
        level: await measure(
            proc.target,
            mixes.is_authorized,
            messages,
            level,
            plan.policy_budget,
            lambda: proc.pids,
        )
        for level in levels
    }


async def policy_phase(plan: Plan, workdir: Path) -> list[JsonDict]:
    """For each variant and policy count: a generated store, its server's startup time and RSS,
    p50/p99 at c=1 and decisions/s at c=16, one big server at a time. The smallest store's
    server stays up through its variant and is measured again at c=1 right after each bigger
    one (``base_c1``), so each ratio to it is taken side by side."""
    records = []
    for variant in plan.variants:
        counts = sorted(plan.condition_counts if variant == "condition" else plan.policy_counts)
        base, base_record = await start_generated(plan, workdir, variant, counts[0])
        with started([base]):
            for count in counts:
                if count == counts[0]:
                    proc, record = base, base_record
                else:
                    proc, record = await start_generated(plan, workdir, variant, count)
                with started([] if proc is base else [proc]):
                    for level, result in (
                        await measure_generated(plan, proc, count, plan.levels)
                    ).items():
                        record[f"c{level}"] = result
                    record["rss_kib"], record["peak_rss_kib"] = procs.memory_kib(proc.pids)
                if proc is not base:
                    again = await measure_generated(plan, base, counts[0], (1,))
                    record["base_policies"] = counts[0]
                    record["base_c1"] = again[1]
                records.append(record)
                c1 = record["c1"]
                progress(
                    f"policies {variant} {count:,}: startup {record['load_s']:.1f} s, p50 "
                    f"{c1['p50_us']:.0f} us, errors {c1['errors']}/{c1['errors'] + c1['requests']}"
                )
    return records


def py_spy() -> str:
    """py-spy from the venv (installed with pip if missing)."""
    candidate = Path(sys.executable).parent / "py-spy"
    if not candidate.exists():
        progress("installing py-spy into the virtualenv")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return str(candidate)


async def profile_phase(plan: Plan, workdir: Path) -> JsonDict:
    """A flame graph of one memory-store server (one worker) answering the lending mix at
    c=16, recorded by py-spy from outside the process."""
    tool = py_spy()
    port = free_port()
    argv = verdict_argv(POLICIES, mixes.LENDING, port, 1 if plan.workers else None)
    proc = procs.spawn("profile", argv, port, workdir, verdict_env())
    svg = plan.out / "hot_path_profile.svg"
    with started([proc]):
        await procs.wait_health(proc, SERVE_TIMEOUT)
        await check_verdict(proc)
        spy = procs.popen(
            [
                tool,
                "record",
                "--pid",
                str(proc.process.pid),
                "--duration",
                str(int(plan.profile_seconds)),
                "--rate",
                "250",
                "--format",
                "flamegraph",
                "--output",
                str(svg),
                # --native unwinds C frames and needs the process paused for each sample.
                *(["--native"] if plan.profile_native else ["--nonblocking"]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
        budget = Budget(10**9, plan.profile_seconds, 300, 0.5)
        result = await measure(
            proc.target,
            mixes.is_authorized,
            mixes.lending_messages(),
            16,
            budget,
            lambda: proc.pids,
        )
        output, _ = await asyncio.to_thread(spy.communicate, timeout=120)
    if spy.returncode != 0 or not svg.exists():
        raise RuntimeError(f"py-spy failed: {output.decode(errors='replace')[-1500:]}")
    progress(f"flame graph: {svg}")
    return {"svg": svg.name, "seconds": plan.profile_seconds, "load": result, "tool": "py-spy"}


# --- the run -------------------------------------------------------------------------------


def machine_info(plan: Plan, cerbos_version: str | None) -> JsonDict:
    """Versions and the machine the figures come from."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"

    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    redis_v = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cedarpy": version("cedarpy"),
        "grpcio": version("grpcio"),
        "redis_server": redis_v.stdout.split()[2] if redis_v.stdout else "unknown",
        "cerbos": cerbos_version,
        "commit": git.stdout.strip(),
        "workers_flag": bool(plan.workers),
        "workers": plan.workers,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


async def run(plan: Plan, workdir: Path) -> JsonDict:
    """Every phase; servers stopped at the end of their phase."""
    data: JsonDict = {"plan": report.plan_dict(plan)}
    if plan.profile_only:
        data["profile"] = await profile_phase(plan, workdir)
        return data
    api, cerbos_version = None, None
    if plan.cerbos:
        cerbos_version = cerbos.version(cerbos.ensure_installed())
        api = cerbos.load_api()
    data["machine"] = machine_info(plan, cerbos_version)
    redis = RedisProcess(free_port(), workdir / "redis")
    redis.start()
    try:
        data["redis_load_s"] = load_redis_entities(redis)
        servers = core_servers(plan)
        running = {s.name: spawn_core(s, plan, redis, workdir) for s in servers}
        with started(list(running.values())):
            for server in servers:
                proc = running[server.name]
                if server.kind == "cerbos":
                    assert api is not None
                    await check_cerbos(proc, api)
                else:
                    await procs.wait_health(proc, SERVE_TIMEOUT)
                    if server.kind == "verdict":
                        await check_verdict(proc)
            progress("servers up; every answer checked")
            if api is not None and plan.equivalence_contexts:
                data["equivalence"] = await equivalence(
                    running["memory"], running["cerbos"], api, plan.equivalence_contexts
                )
            data["core"] = await core_phase(plan, running, api)
            data["ceiling"] = await ceiling_phase(plan, running)
            data["servers"] = {
                name: {
                    "ready_s": proc.ready_s,
                    "rss_kib": procs.memory_kib(proc.pids)[0],
                    "processes": len(proc.pids),
                }
                for name, proc in running.items()
            }
    finally:
        redis.stop()
    data["policies"] = await policy_phase(plan, workdir)
    if plan.profile:
        data["profile"] = await profile_phase(plan, workdir)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run, then write JSON, plots, the table and the target summary."""
    plan = parse_args(argv)
    plan.out.mkdir(parents=True, exist_ok=True)
    if plan.from_json is not None:
        data = json.loads(plan.from_json.read_text(encoding="utf-8"))
        data.pop("summary", None)
    else:
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="verdict-hot-path-") as tmp:
            data = asyncio.run(run(plan, Path(tmp)))
        data["wall_s"] = time.monotonic() - began
    if plan.profile_only:
        return 0
    summary = report.summarize(data)
    data["summary"] = summary
    (plan.out / "hot_path.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    report.write_plots(data, plan.out)
    markdown = report.markdown(data)
    (plan.out / "hot_path.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    if plan.update_readme:
        report.update_readme(README, markdown)
    progress(f"done in {data['wall_s']:.0f} s; results in {plan.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
