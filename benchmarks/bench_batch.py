"""BatchAuthorize against IsAuthorized and the no-op floor, side by side in one run.

Over gRPC (server in its own process): decisions/s when each decision is one IsAuthorized, and
when 100 decisions travel in one BatchAuthorize, for the memory-store server and the no-op
handler. In process: the engine's cost per decision alone (`authorize`) and in a batch
(`authorize_batch`, one Cedar call over the union of the items' slices).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import POLICIES, machine_info, spawn, stop_server, wait_serving
from benchmarks.loadgen import run_grpc_load
from tests.cases import lending_cases
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.app import build_app
from verdict.client import build_request
from verdict.config import Settings

RESULTS = Path(__file__).parent / "results"
BATCH = 100


def messages() -> tuple[list[pb.IsAuthorizedRequest], pb.BatchAuthorizeRequest]:
    """The shared lending cases, cycled to one batch of BATCH items."""
    cases = lending_cases()
    singles = [build_request(c.principal, c.action, c.resource, context=c.context) for c in cases]
    return singles, pb.BatchAuthorizeRequest(
        requests=[singles[i % len(singles)] for i in range(BATCH)]
    )


async def grpc_figures(target: str, requests: int, concurrency: int) -> dict[str, float]:
    """Decisions per second as single calls and as batches, against one server."""
    singles, batch = messages()
    single = await run_grpc_load(
        target,
        lambda ch: pb_grpc.AuthorizationServiceStub(ch).IsAuthorized,
        singles,
        concurrency=concurrency,
        requests=requests,
        warmup=200,
    )
    batched = await run_grpc_load(
        target,
        lambda ch: pb_grpc.AuthorizationServiceStub(ch).BatchAuthorize,
        [batch],
        concurrency=concurrency,
        requests=max(requests // 50, 20),
        warmup=5,
    )
    assert single.errors == batched.errors == 0, (single.first_error, batched.first_error)
    return {
        "single_per_s": single.throughput,
        "batch_decisions_per_s": batched.throughput * BATCH,
        "batch_p50_ms": batched.p50_ms,
        "single_p50_ms": single.p50_ms,
    }


async def engine_figures(rounds: int) -> dict[str, float]:
    """Engine µs per decision, alone and in a batch, interleaved for a fair comparison."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    await app.entities.prepare()  # the parsed handles the server builds before serving
    requests = [c.request for c in lending_cases()] * 4
    alone, together = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for request in requests:
            await app.authorizer.authorize(request)
        alone.append((time.perf_counter() - started) / len(requests) * 1e6)
        started = time.perf_counter()
        await app.authorizer.authorize_batch(requests)
        together.append((time.perf_counter() - started) / len(requests) * 1e6)
    return {"alone_us": statistics.median(alone), "batch_us": statistics.median(together)}


async def run(requests: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Every figure of one run."""
    figures: dict[str, Any] = {"engine": await engine_figures(rounds)}
    with tempfile.TemporaryDirectory() as logs:
        servers = {name: spawn(name, "", Path(logs)) for name in ("noop", "memory")}
        try:
            for server in servers.values():
                await wait_serving(server)
            for name, server in servers.items():
                figures[name] = await grpc_figures(server.target, requests, concurrency)
        finally:
            for server in servers.values():
                stop_server(server)
    return figures


def plot(figures: dict[str, Any], out: Path) -> None:
    """Bars: decisions/s per server and mode; engine µs per decision."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels, values = [], []
    for name in ("noop", "memory"):
        labels += [f"{name}\nIsAuthorized", f"{name}\nBatch({BATCH})"]
        values += [figures[name]["single_per_s"], figures[name]["batch_decisions_per_s"]]
    left.bar(labels, values, color=["#999", "#555", "#8ab", "#357"])
    left.set_yscale("log")
    left.set_title("decisions/s over gRPC (log scale)")
    for x, v in enumerate(values):
        left.annotate(f"{v:,.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    engine = figures["engine"]
    right.bar(
        ["authorize()", f"authorize_batch({BATCH})"],
        [engine["alone_us"], engine["batch_us"]],
        color=["#8ab", "#357"],
    )
    right.set_title("engine µs per decision (in process)")
    fig.suptitle("BatchAuthorize vs IsAuthorized, memory store and no-op floor, one run")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print and write results/batch.json and results/batch.png."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="single calls per scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop workers")
    parser.add_argument("--rounds", type=int, default=20, help="engine rounds (interleaved)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.requests, args.concurrency, args.rounds))
    figures["ratios"] = {
        "memory_batch_over_single_throughput": figures["memory"]["batch_decisions_per_s"]
        / figures["memory"]["single_per_s"],
        "memory_over_noop_batch_throughput": figures["memory"]["batch_decisions_per_s"]
        / figures["noop"]["batch_decisions_per_s"],
        "engine_alone_over_batch": figures["engine"]["alone_us"] / figures["engine"]["batch_us"],
    }
    figures["machine"] = machine_info()
    figures["plan"] = vars(args) | {"out": str(args.out), "batch": BATCH}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch.json").write_text(json.dumps(figures, indent=2) + "\n")
    plot(figures, args.out / "batch.png")
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
