"""What `explain` costs: Authorizer.authorize per decision with and without it, interleaved.

.venv/bin/python -m benchmarks.bench_explain      # ~20 s; writes results/explain.json
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.bench_entity_store import POLICIES, machine_info
from tests.cases import lending_cases
from verdict.app import build_app
from verdict.config import Settings

RESULTS = Path(__file__).parent / "results"


async def per_decision_us(explain: bool, rounds: int) -> float:
    """Median over rounds of the mean µs per authorize() over the lending cases."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    await app.entities.prepare()
    requests = [replace(c.request, explain=explain) for c in lending_cases()]
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for request in requests:
            await app.authorizer.authorize(request)
        samples.append((time.perf_counter() - started) / len(requests) * 1e6)
    await app.entities.close()
    return statistics.median(samples)


async def main() -> None:
    rows: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(5):  # interleaved, so both see the same machine
        rows["off"].append(await per_decision_us(False, 40))
        rows["on"].append(await per_decision_us(True, 40))
    off, on = min(rows["off"]), min(rows["on"])
    report = {
        "machine": machine_info(),
        "us_per_decision": {"explain_off": round(off, 1), "explain_on": round(on, 1)},
        "ratio": round(on / off, 2),
        "samples": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["us_per_decision"]), "ratio", report["ratio"])


if __name__ == "__main__":
    asyncio.run(main())
