"""What Verdict's edge steps cost per call, on a no-op handler, side by side.

The same no-op AuthorizationService (benchmarks/noop_server.py) is served in its own process
with nothing around it (the floor); with the steps wrapped around each handler once at
registration, as Verdict serves (transport/pipeline.py): the call context alone (request
id, log context, RPC metrics), then also the count of calls in progress a stop waits for
(``CallsInProgress``, a done callback per call), then also admission (``ConcurrencyLimit``;
these three are what every Verdict server runs), then also the callers-file check
(``EdgeGuard``, a bearer-token caller); and with all four applied by a grpc.aio server
interceptor instead (how Verdict ran them before: the
interceptor rebuilds the handler on every call). Interleaved rounds; a closed-loop client at
c=1 measures p50 and p99. The difference from the floor is the edge's own cost, before any
decision is made.

    .venv/bin/python -m benchmarks.bench_edge            # ~1 min
    .venv/bin/python -m benchmarks.bench_edge --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

from benchmarks.bench_entity_store import machine_info
from benchmarks.noop_server import SERVICE_NAME, NoopAuthorizationServicer
from tests.processes import free_port
from tests.security.authn_support import token_sha256
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import bearer, build_request
from verdict.transport.authz import EdgeGuard
from verdict.transport.edge_rules import ReloadingEdgeRules
from verdict.transport.in_progress import CallsInProgress
from verdict.transport.overload import ConcurrencyLimit
from verdict.transport.pipeline import Handler, PassThrough, Wrap, WrappingRegistrar
from verdict.transport.server import edge_steps

RESULTS = Path(__file__).parent / "results"
MODES = (
    "floor",
    "call-context",
    "count+call-context",
    "count+call-context+limit",
    "count+call-context+limit+callers",
    "all four as an interceptor",
)
TOKEN = "bench-edge-token"
CALLERS = (
    '[[callers]]\nid = "bench"\nmethods = ["decisions"]\nstores = ["*"]\n'
    f'token_sha256 = ["{token_sha256(TOKEN)}"]\n'
)
REQUEST = build_request(
    "Employee::olivia",
    "Action::view",
    "Loan::loan-1001",
    context={"mfa": True, "now": "2025-03-04T10:00:00Z"},
)


def steps(mode: str, callers_file: Path) -> Wrap:
    """What wraps each handler in ``mode``, outermost first (as transport/server.py orders it)."""
    guard = None
    if "callers" in mode or "interceptor" in mode:
        rules = ReloadingEdgeRules(callers_file, 3600)
        guard = EdgeGuard(rules, lambda _: "lending")
    limit = "limit" in mode or "interceptor" in mode
    admission = ConcurrencyLimit(256, [SERVICE_NAME] if limit else [])
    counted = "count" in mode or "interceptor" in mode
    return edge_steps(guard, admission, CallsInProgress() if counted else None)


class StepsAsInterceptor(grpc.aio.ServerInterceptor):
    """The same steps applied per call by an interceptor, as Verdict did before."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler: Handler | None = await continuation(details)
        return None if handler is None else self._wrap(handler, details.method)


async def serve(mode: str, port: int, callers_file: Path) -> None:
    """Serve the no-op handler behind ``mode``'s steps until terminated."""
    servicer = NoopAuthorizationServicer()
    if mode == "floor":
        server = grpc.aio.server()
        pb_grpc.add_AuthorizationServiceServicer_to_server(servicer, server)
    elif "interceptor" in mode:
        server = grpc.aio.server(interceptors=[StepsAsInterceptor(steps(mode, callers_file))])
        pb_grpc.add_AuthorizationServiceServicer_to_server(servicer, server)
    else:  # as Verdict serves: the steps wrapped at registration, behind PassThrough
        server = grpc.aio.server(interceptors=[PassThrough()])
        registrar = WrappingRegistrar(server, steps(mode, callers_file)).as_server()
        pb_grpc.add_AuthorizationServiceServicer_to_server(servicer, registrar)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def measure(port: int, calls: int) -> dict[str, float]:
    """p50 and p99 (µs) of ``calls`` sequential IsAuthorized calls (after a warm-up)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = pb_grpc.AuthorizationServiceStub(channel)
        metadata = tuple(bearer(TOKEN))
        for _ in range(300):
            stub.IsAuthorized(REQUEST, metadata=metadata, timeout=5)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.IsAuthorized(REQUEST, metadata=metadata, timeout=5)
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def run_round(mode: str, calls: int, callers_file: Path) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bench_edge", "--serve", mode, str(port)]
    command += ["--callers-file", str(callers_file)]
    server = subprocess.Popen(command, env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    try:
        return measure(port, calls)
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="one round of 500 calls")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--callers-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1]), args.callers_file))
        return
    rounds, calls = (1, 500) if args.quick else (args.rounds, args.calls)
    with tempfile.TemporaryDirectory() as tmp:
        callers_file = Path(tmp) / "callers.toml"
        callers_file.write_text(CALLERS)
        measured: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode in MODES:  # interleaved: a slow moment of the VM hits every mode
                measured[mode].append(run_round(mode, calls, callers_file))
    medians = {
        mode: {key: statistics.median(r[key] for r in runs) for key in ("p50_us", "p99_us")}
        for mode, runs in measured.items()
    }
    result: dict[str, Any] = {
        "rounds": rounds,
        "calls": calls,
        "median": medians,
        "runs": measured,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out)


def report(result: dict[str, Any], out: Path) -> None:
    medians = result["median"]
    floor = medians["floor"]["p50_us"]
    lines = [
        "# The edge's cost per call (no-op handler, c=1)",
        "",
        f"Machine: {result['machine']}. {result['rounds']} interleaved rounds of "
        f"{result['calls']} calls, medians; server and client in separate processes.",
        "",
        "| edge steps | p50 | p99 | p50 over the floor |",
        "|---|---|---|---|",
    ]
    for mode in MODES:
        p50, p99 = medians[mode]["p50_us"], medians[mode]["p99_us"]
        lines.append(f"| {mode} | {p50:,.0f} µs | {p99:,.0f} µs | {p50 - floor:+,.0f} µs |")
    (out / "edge.md").write_text("\n".join(lines) + "\n")
    figure, axes = plt.subplots(figsize=(8, 3.4))
    axes.barh(list(MODES), [medians[m]["p50_us"] for m in MODES], color="#1f77b4")
    axes.set_xlabel("p50 µs per call (c=1)")
    axes.set_title("Verdict's edge steps on a no-op handler")
    figure.tight_layout()
    figure.savefig(out / "edge.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
