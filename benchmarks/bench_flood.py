"""A CPU-bound flood (400 callers of one cached decision) against max_pending_calls, side by side.

For each pending limit (effectively unlimited, 256, 128, 64) and each kind of flooding client
(hostile: retries at once after a refusal; polite: waits 50 ms), one `verdict serve` process on
the memory store and one flood process (tests/faults/flood.py), in one run on one machine.
Reports answers per second, the latency of admitted calls (p50/p99/max) and refusals; writes
benchmarks/results/flood.json and flood.png. The unlimited row is the baseline.

    .venv/bin/python -m benchmarks.bench_flood            # ~90 s
    .venv/bin/python -m benchmarks.bench_flood --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import POLICIES, machine_info
from tests.security.serve_process import running_server

RESULTS = Path(__file__).parent / "results"
CALLERS = 400
LIMITS = {"unlimited": 1_000_000, "256": 256, "128": 128, "64": 64}
CLIENTS = {"hostile": 0.0, "polite": 0.05}


def one_run(limit: int, backoff: float, seconds: float) -> dict[str, Any]:
    """Serve with ``max_pending_calls`` = ``limit`` and flood it for ``seconds``."""
    env = {"VERDICT_MAX_PENDING_CALLS": str(limit), "VERDICT_LOG_LEVEL": "warning"}
    with running_server(POLICIES, "--default-store", "lending", env=env) as (_, port):
        command = [sys.executable, "-m", "tests.faults.flood", f"127.0.0.1:{port}", str(CALLERS)]
        done = subprocess.run(
            [*command, str(seconds), "hits", str(backoff)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Admitted p99 and answers/s per limit, one line per client kind."""
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(10, 4))
    for client in CLIENTS:
        mine = [r for r in rows if r["client"] == client]
        names = [r["max_pending_calls"] for r in mine]
        latency.plot(names, [r["admitted_p99_ms"] for r in mine], marker="o", label=client)
        throughput.plot(names, [r["answered_per_s"] for r in mine], marker="o", label=client)
    latency.set(title="admitted calls, p99 (ms)", xlabel="max_pending_calls")
    throughput.set(title="answered per second", xlabel="max_pending_calls")
    latency.legend()
    figure.suptitle(f"{CALLERS} callers of one cached decision, 2-core loopback")
    figure.tight_layout()
    figure.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_flood")
    parser.add_argument("--quick", action="store_true", help="1 s per run (smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 8.0
    rows = []
    for client, backoff in CLIENTS.items():
        for name, limit in LIMITS.items():
            result = one_run(limit, backoff, seconds)
            codes = result["codes"]
            row = {
                "client": client,
                "max_pending_calls": name,
                "answered_per_s": result["answered_per_s"],
                "admitted_p50_ms": round(result["admitted_p50_ms"] or 0, 1),
                "admitted_p99_ms": round(result["admitted_p99_ms"] or 0, 1),
                "admitted_max_ms": round(result["admitted_max_ms"] or 0, 1),
                "refused": sum(n for code, n in codes.items() if code != "OK"),
                "codes": codes,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "callers": CALLERS, "seconds": seconds, "rows": rows}
    (args.out / "flood.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out / "flood.png")


if __name__ == "__main__":
    main()
