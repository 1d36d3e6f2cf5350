"""The callers check's cost on the hot path: IsAuthorized with and without a callers file.

Three servers on the sample policies, each in its own process, measured in interleaved rounds
over loopback gRPC: ``open`` (no callers file: no check), ``token`` (callers file, a
static bearer token) and ``jwt`` (callers file, an RS256 JWT verified against a JWKS on every
call). Reported: p50 latency at concurrency 1 and decisions/s at concurrency 16, and the
ratios to ``open`` (target: the check adds at most 5% to a decision). In process: the
cost of identifying one caller (static token hash lookup, JWT verification).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import (
    POLICIES,
    ROOT,
    Server,
    machine_info,
    stop_server,
    wait_serving,
)
from benchmarks.loadgen import LoadResult, run_grpc_load
from tests.cases import lending_cases
from tests.redis_support import free_port
from tests.security.authn_support import Issuer, jwt_table, token_sha256
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.transport.authz import EdgeGuard, FixedRules
from verdict.transport.callers import load_callers
from verdict.transport.edge_rules import EdgeRules
from verdict.transport.identity import Authenticator, JwtVerifier

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("open", "token", "jwt")
TOKEN = "bench-static-token"
CALLER = "bench-caller"
METHOD = "/verdict.v1.AuthorizationService/IsAuthorized"


def callers_file(folder: Path, issuer: Issuer) -> Path:
    """A callers file granting decisions to the static token and to the JWT subject."""
    path = folder / "callers.toml"
    path.write_text(
        jwt_table(issuer)
        + f'\n[[callers]]\nid = "{CALLER}"\nmethods = ["decisions"]\nstores = ["lending"]\n'
        f'token_sha256 = ["{token_sha256(TOKEN)}"]\n'
    )
    return path


def spawn(name: str, callers: Path, logdir: Path) -> Server:
    """One scenario's server, in its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "verdict", "serve", "--stores", str(POLICIES)]
    argv += ["--default-store", "lending", "--listen", f"127.0.0.1:{port}", "--log-level", "error"]
    if name != "open":
        argv += ["--callers-file", str(callers)]
    log = logdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=sink)
    return Server(name, port, process, log)


async def measure(
    server: Server, metadata: tuple[tuple[str, str], ...], requests: int
) -> dict[str, LoadResult]:
    """Latency at concurrency 1 and throughput at concurrency 16 against one server."""
    cases = lending_cases()
    messages = [build_request(c.principal, c.action, c.resource, context=c.context) for c in cases]

    def method(channel: Any) -> Any:
        return functools.partial(
            pb_grpc.AuthorizationServiceStub(channel).IsAuthorized, metadata=metadata
        )

    figures = {}
    for concurrency in (1, 16):
        result = await run_grpc_load(
            server.target, method, messages, concurrency=concurrency, requests=requests, warmup=100
        )
        if result.errors:
            raise RuntimeError(f"{server.name}: {result.first_error}")
        figures[f"c{concurrency}"] = result
    return figures


class _Context:
    """The two things the guard asks of a grpc.aio context (this is a benchmark, not a test)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


async def interceptor_cost(callers: Path, rounds: int) -> dict[str, float]:
    """µs per call of the caller check's own work (identify, grant, parse, store check)
    beyond parsing the request and calling the servicer, with a static token."""
    loaded = load_callers(callers)
    rules = FixedRules(EdgeRules(loaded, Authenticator(loaded.tokens, None)))
    guard = EdgeGuard(rules, lambda _: "lending")
    case = lending_cases()[0]
    raw = build_request(
        case.principal, case.action, case.resource, context=case.context
    ).SerializeToString()

    async def servicer(request: object, context: object) -> object:
        return request

    plain: Any = grpc.unary_unary_rpc_method_handler(
        servicer, request_deserializer=pb.IsAuthorizedRequest.FromString
    )

    guarded: Any = guard.wrap(plain, METHOD)
    context: Any = _Context((("authorization", f"Bearer {TOKEN}"),))
    timings: dict[str, list[float]] = {"plain": [], "guarded": []}
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            await servicer(pb.IsAuthorizedRequest.FromString(raw), context)
        timings["plain"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(rounds):
            await guarded.unary_unary(raw, context)
        timings["guarded"].append(time.perf_counter() - started)
    plain_us = min(timings["plain"]) / rounds * 1e6
    guarded_us = min(timings["guarded"]) / rounds * 1e6
    return {"plain_us": plain_us, "guarded_us": guarded_us, "interceptor_us": guarded_us - plain_us}


def identify_cost(issuer: Issuer, callers: Path, rounds: int) -> dict[str, float]:
    """µs to identify one caller in process: static token, and JWT verification."""
    loaded = load_callers(callers)
    assert loaded.jwt is not None
    authenticator = Authenticator(loaded.tokens, JwtVerifier.load(loaded.jwt))
    token_md = [("authorization", f"Bearer {TOKEN}")]
    jwt_md = [("authorization", f"Bearer {issuer.token(CALLER)}")]
    costs = {}
    for name, md in (("token", token_md), ("jwt", jwt_md)):
        started = time.perf_counter()
        for _ in range(rounds):
            authenticator.identify(md, dict)
        costs[f"identify_{name}_us"] = (time.perf_counter() - started) / rounds * 1e6
    return costs


async def main(rounds: int, requests: int, out: Path) -> dict[str, Any]:
    """Run every scenario in interleaved rounds; write JSON and PNG into ``out`` (existing)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        issuer = Issuer(folder)
        callers = callers_file(folder, issuer)
        metadata = {
            "open": (),
            "token": (("authorization", f"Bearer {TOKEN}"),),
            "jwt": (
                ("authorization", f"Bearer {issuer.token(CALLER, exp=int(time.time()) + 3600)}"),
            ),
        }
        servers = {name: spawn(name, callers, folder) for name in SCENARIOS}
        runs: dict[str, list[dict[str, LoadResult]]] = {name: [] for name in SCENARIOS}
        try:
            for server in servers.values():
                await wait_serving(server)
            for _ in range(rounds):
                for name in SCENARIOS:
                    runs[name].append(await measure(servers[name], metadata[name], requests))
        finally:
            for server in servers.values():
                stop_server(server)
        in_process = identify_cost(issuer, callers, 2000)
        in_process |= await interceptor_cost(callers, 20_000)
    report = summarise(runs)
    report["in_process"] = in_process
    open_p50_us = report["scenarios"]["open"]["p50_ms_c1"] * 1000
    report["interceptor_share_of_decision"] = in_process["interceptor_us"] / open_p50_us
    report["machine"] = machine_info()
    report["settings"] = {"rounds": rounds, "requests_per_run": requests}
    (out / "authz.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "authz.png")
    return report


def summarise(runs: dict[str, list[dict[str, LoadResult]]]) -> dict[str, Any]:
    """Medians per scenario, and per-round ratios to ``open`` (so drift cancels out)."""
    scenarios: dict[str, Any] = {}
    for name, results in runs.items():
        scenarios[name] = {
            "p50_ms_c1": statistics.median(r["c1"].p50_ms for r in results),
            "p99_ms_c1": statistics.median(r["c1"].p99_ms for r in results),
            "per_s_c16": statistics.median(r["c16"].throughput for r in results),
            "p50_ms_c16": statistics.median(r["c16"].p50_ms for r in results),
        }
    ratios: dict[str, Any] = {}
    for name in ("token", "jwt"):
        pairs = list(zip(runs[name], runs["open"], strict=True))
        ratios[name] = {
            "latency_c1": statistics.median(a["c1"].p50_ms / b["c1"].p50_ms for a, b in pairs),
            "throughput_c16": statistics.median(
                a["c16"].throughput / b["c16"].throughput for a, b in pairs
            ),
        }
    return {"scenarios": scenarios, "ratios_to_open": ratios}


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels: p50 latency at concurrency 1, decisions/s at concurrency 16."""
    scenarios = report["scenarios"]
    names = list(scenarios)
    colors = ["#999999", "#4c72b0", "#c44e52"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(names, [scenarios[n]["p50_ms_c1"] for n in names], color=colors)
    left.set_title("IsAuthorized p50 latency, concurrency 1")
    left.set_ylabel("ms")
    right.bar(names, [scenarios[n]["per_s_c16"] for n in names], color=colors)
    right.set_title("IsAuthorized decisions/s, concurrency 16")
    for axis in (left, right):
        axis.set_xlabel("open = no callers file; token / jwt = callers file")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 500 requests")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 500
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(main(args.rounds, args.requests, args.out))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "scenarios",
                    "ratios_to_open",
                    "in_process",
                    "interceptor_share_of_decision",
                )
            },
            indent=2,
        )
    )
