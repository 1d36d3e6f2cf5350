"""The serving event loop side by side: the floor and Verdict, each on asyncio's loop and on uvloop.

Four servers, each in its own process on a free loopback port: the no-op handler
(benchmarks/noop_server.py) and `verdict serve --workers 1` on the lending store, each with
``--event-loop asyncio`` and ``--event-loop uvloop``. In interleaved rounds the same client
(``benchmarks.hot_path.load``, a separate process) drives the lending IsAuthorized mix at c=1 and
c=16; the server's CPU time (``/proc``) per call is read around each run. Medians over rounds.

    .venv/bin/python -m benchmarks.bench_event_loop            # ~2 min
    .venv/bin/python -m benchmarks.bench_event_loop --quick    # smoke run

Writes ``benchmarks/results/event_loop.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import machine_info
from benchmarks.hot_path import procs
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SERVERS = ("floor-asyncio", "floor-uvloop", "verdict-asyncio", "verdict-uvloop")
CONCURRENCY = (1, 16)


def server_argv(name: str, port: int) -> list[str]:
    """The command of one server: ``floor-<loop>`` or ``verdict-<loop>``."""
    kind, loop = name.split("-")
    listen = f"127.0.0.1:{port}"
    if kind == "floor":
        return [
            sys.executable,
            "-m",
            "benchmarks.noop_server",
            "--listen",
            listen,
            *("--event-loop", loop),
        ]
    stores = ("--stores", str(ROOT / "policies"), "--default-store", "lending")
    return [
        sys.executable,
        "-m",
        "verdict",
        "serve",
        *stores,
        "--listen",
        listen,
        *("--workers", "1", "--event-loop", loop),
    ]


def drive(port: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """One closed-loop run of the lending mix from a separate client process."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.hot_path.load",
            "--target",
            f"127.0.0.1:{port}",
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="one round of 0.5 s runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, seconds = (1, 0.5) if args.quick else (args.rounds, args.seconds)
    env = {**os.environ, "VERDICT_LOG_LEVEL": "warning", "GRPC_VERBOSITY": "ERROR"}
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {
        name: {c: [] for c in CONCURRENCY} for name in SERVERS
    }
    started = time.monotonic()
    try:
        for name in SERVERS:
            port = free_port()
            argv = server_argv(name, port)
            servers[name] = (subprocess.Popen(argv, env=env, cwd=ROOT), port)
        for _, port in servers.values():
            drive(port, 4, 1.0)  # waits for the server, and warms it
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for name in SERVERS:  # interleaved: a slow moment of the VM hits every server
                    process, port = servers[name]
                    before = procs.cpu_seconds([process.pid])
                    result = drive(port, concurrency, seconds)
                    used = procs.cpu_seconds([process.pid]) - before
                    if result["errors"]:
                        raise RuntimeError(f"{name}: {result['first_error']}")
                    runs[name][concurrency].append(
                        {
                            "p50_us": result["p50_ms"] * 1000,
                            "p99_us": result["p99_ms"] * 1000,
                            "per_second": result["throughput"],
                            "server_cpu_us_per_call": used / result["requests"] * 1e6,
                        }
                    )
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            process.wait(15)
    medians = {
        name: {
            str(c): {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            for c, rows in by_c.items()
        }
        for name, by_c in runs.items()
    }
    report: dict[str, Any] = {
        "rounds": rounds,
        "seconds": seconds,
        "median": medians,
        "runs": runs,
        "machine": machine_info(),
        "elapsed_s": time.monotonic() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "event_loop.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report(report, args.out)


def write_report(report: dict[str, Any], out: Path) -> None:
    """The markdown table and the plot."""
    medians = report["median"]
    lines = [
        "# The serving event loop: asyncio vs uvloop (lending mix, one worker)",
        "",
        f"Machine: {report['machine']}. {report['rounds']} interleaved rounds of "
        f"{report['seconds']} s per server and concurrency, medians; client in its own process.",
        "",
        "| server | p50 c=1 | p99 c=1 | server CPU/call c=1 | decisions/s c=16 | p99 c=16 "
        "| server CPU/call c=16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SERVERS:
        one, many = medians[name]["1"], medians[name]["16"]
        lines.append(
            f"| {name} | {one['p50_us']:,.0f} µs | {one['p99_us']:,.0f} µs "
            f"| {one['server_cpu_us_per_call']:,.0f} µs | {many['per_second']:,.0f} "
            f"| {many['p99_us']:,.0f} µs | {many['server_cpu_us_per_call']:,.0f} µs |"
        )
    ratio = medians["verdict-uvloop"]["16"]["per_second"] / max(
        medians["verdict-asyncio"]["16"]["per_second"], 1e-9
    )
    cpu = medians["verdict-uvloop"]["16"]["server_cpu_us_per_call"] / max(
        medians["verdict-asyncio"]["16"]["server_cpu_us_per_call"], 1e-9
    )
    lines += [
        "",
        f"Verdict on uvloop / on asyncio at c=16: {ratio:.2f}x the decisions/s, "
        f"{cpu:.2f}x the server CPU per call.",
    ]
    (out / "event_loop.md").write_text("\n".join(lines) + "\n")
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    names = list(SERVERS)
    axes[0].barh(names, [medians[n]["16"]["per_second"] for n in names], color="#1f77b4")
    axes[0].set_xlabel("decisions/s at c=16")
    axes[1].barh(
        names, [medians[n]["16"]["server_cpu_us_per_call"] for n in names], color="#ff7f0e"
    )
    axes[1].set_xlabel("server CPU µs per call at c=16")
    figure.suptitle("Event loop: asyncio vs uvloop")
    figure.tight_layout()
    figure.savefig(out / "event_loop.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
