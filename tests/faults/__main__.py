"""Run the fault suite: python -m tests.faults [--quick] [--out FILE]; exit 1 on any breach."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cases import lending_cases
from tests.faults.load import Oracle, Phase, SteadyLoad, summarize
from tests.faults.rig import Rig
from tests.faults.scenarios import SCENARIOS, Context, Timing

FULL = Timing(steady=2.0, hold=3.0, down=4.5, grace=3.0)
QUICK = Timing(steady=1.0, hold=1.5, down=2.0, grace=1.0)
MAX_CONCURRENT_CALLS = 32
MAX_PENDING_CALLS = 128
WORKERS = 8
COLUMNS = [
    ("phase", 27),
    ("sent", 6),
    ("answered", 8),
    ("failed_closed", 13),
    ("wrongly_allowed", 15),
    ("time_to_recover_s", 17),
    ("p50_ms", 7),
    ("p99_ms", 8),
]


async def run(timing: Timing, workers: int = 1) -> dict[str, Any]:
    """Start everything, run each scenario in turn under steady load, and summarize."""
    env = {
        "VERDICT_MAX_CONCURRENT_CALLS": str(MAX_CONCURRENT_CALLS),
        "VERDICT_MAX_PENDING_CALLS": str(MAX_PENDING_CALLS),
        "VERDICT_CACHE_GRACE_SECONDS": str(timing.grace),
        "VERDICT_SHUTDOWN_GRACE_SECONDS": "5",
        "VERDICT_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryDirectory(prefix="verdict-faults-") as workdir:
        rig = Rig(Path(workdir), env, workers)
        cases = lending_cases()
        load = SteadyLoad(rig.target, cases, WORKERS, timeout=1.0)
        oracle = Oracle(cases, timing.grace)
        ctx = Context(rig, load, oracle, timing)
        phases: list[Phase] = []
        started = time.monotonic()
        try:
            await rig.start()
            load.start()
            for name, fault, scenario in SCENARIOS:
                phase = Phase(name, fault, time.monotonic())
                await scenario(ctx, phase)
                phase.ended = time.monotonic()
                phases.append(phase)
                print(f"faults: {name} done", file=sys.stderr)
        except BaseException:
            print((Path(workdir) / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            await load.stop()
            await rig.stop()
        rows = [summarize(p, load.outcomes, oracle) for p in phases]
    return {
        "settings": {
            "max_concurrent_calls": MAX_CONCURRENT_CALLS,
            "max_pending_calls": MAX_PENDING_CALLS,
            "cache_grace_seconds": timing.grace,
            "steady_workers": WORKERS,
            "server_workers": workers,
            "call_timeout_seconds": 1.0,
            "redis_timeout_seconds": 0.5,
        },
        "timing": timing.__dict__,
        "seconds": round(time.monotonic() - started, 1),
        "writes": {"ok": rig.writes_ok, "failed": rig.writes_failed},
        "phases": rows,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The fault table as aligned text, then each phase's notes."""
    lines = [" ".join(name.ljust(width) for name, width in COLUMNS)]
    for row in rows:
        cells = ["-" if row[n] is None else str(row[n]) for n, _ in COLUMNS]
        if row["time_to_recover_s"] is None:
            cells[5] = "NOT RECOVERED"
        lines.append(" ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    lines.append("")
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in dict(COLUMNS) and k != "fault"}
        lines.append(f"{row['phase']}: {row['fault']}; {json.dumps(extra)}")
    return "\n".join(lines)


def breaches(rows: list[dict[str, Any]]) -> list[str]:
    """Every way the run failed the suite's rules."""
    found = []
    for row in rows:
        name = row["phase"]
        if row["wrongly_allowed"]:
            found.append(f"{name}: {row['wrongly_allowed']} wrongly allowed")
        if row["time_to_recover_s"] is None:
            found.append(f"{name}: did not recover")
        if row.get("in_flight_lost"):
            found.append(f"{name}: {row['in_flight_lost']} in-flight calls lost")
        if row.get("ok_while_empty"):
            found.append(f"{name}: {row['ok_while_empty']} answers from an empty Redis")
        refusals = row.get("flood_refusals", ())
        if "flood_codes" in row and not any(row["flood_codes"].get(c) for c in refusals):
            found.append(f"{name}: the flood was never refused ({', '.join(refusals)})")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--quick", action="store_true", help="short phases (CI)")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`verdict serve --workers` (default 1: CI's figures; 2 runs the supervisor)",
    )
    args = parser.parse_args()
    result = asyncio.run(run(QUICK if args.quick else FULL, args.workers))
    print(table(result["phases"]))
    print(f"\n{result['seconds']} s; writes by another replica: {result['writes']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    problems = breaches(result["phases"])
    for problem in problems:
        print(f"FAULT SUITE FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
