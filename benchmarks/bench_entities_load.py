"""`verdict entities load` of a large lending store into a real Redis: the whole command's rate
and where its time goes, beside the floors of its parts measured in the same run.

Generated lending entities (partners, roles, employees, borrowers, loans with entity references,
~265 bytes each) are written to a copy of policies/lending, then:

1. the real command, as a subprocess, timed from start to exit (interpreter start included),
   ``--runs`` times; its own summary gives the Redis write time;
2. the floors, in this process: ``json.loads`` of the file (Python's fastest parse, without
   Verdict's strict checks, with the cyclic collector paused as the command pauses it);
   Verdict's parse in parts without Cedar (the command's main thread: decode, proven chunk
   by chunk or strict, shape, uniqueness, hierarchy and the stored text of each entity); Cedar's
   parse and schema check of the whole file (``Entities.from_json_str``, as the command ran it
   before) and of the same entities in the command's parts, one after the other on one thread
   (the CPU the command's checking threads spend): the steps no Python change can make faster.

    .venv/bin/python -m benchmarks.bench_entities_load              # 300,000 entities, ~2 min
    .venv/bin/python -m benchmarks.bench_entities_load --quick      # 30,000, smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import machine_info
from tests.redis_support import redis_server
from verdict import cedar
from verdict.config import Settings
from verdict.entities_load import PartChecks, parse_in_parts
from verdict.heap import collector_paused
from verdict.store.base import StoredEntity
from verdict.store.bulk import load_entities
from verdict.store.entity_cache import EntityCache
from verdict.store.entity_file import DEFAULT_HIERARCHY
from verdict.store.redis_connect import key_layout, make_client
from verdict.store.redis_store import RedisEntityStore

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ROLES = ["loan_officer", "underwriter", "senior_underwriter", "support_agent", "compliance"]
TARGET = 50_000  # entities/s for the whole command (issue 13)


def ref(kind: str, ident: str) -> dict[str, Any]:
    return {"__entity": {"type": kind, "id": ident}}


def lending_entities(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` entities of the lending schema: 10% employees, 40% borrowers, the rest loans."""
    rng = random.Random(seed)
    partners = [
        {
            "uid": {"type": "Partner", "id": f"p{i}"},
            "attrs": {"name": f"Partner {i}", "kind": "bank", "active": True},
            "parents": [],
        }
        for i in range(100)
    ]
    roles = [{"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []} for r in ROLES]
    rest = count - len(partners) - len(roles)
    employees, borrowers = rest // 10, rest * 4 // 10
    found: list[dict[str, Any]] = [*partners, *roles]
    for i in range(employees):
        attrs = {
            "name": f"Employee Number {i}",
            "partner": ref("Partner", f"p{i % 100}"),
            "department": "lending",
            "approval_limit": rng.randint(0, 500_000),
            "suspended": False,
        }
        parents = [{"type": "Role", "id": rng.choice(ROLES)}]
        found.append(
            {"uid": {"type": "Employee", "id": f"e{i}"}, "attrs": attrs, "parents": parents}
        )
    for i in range(borrowers):
        attrs = {
            "name": f"Borrower Person {i}",
            "partner": ref("Partner", f"p{i % 100}"),
            "kyc_verified": True,
            "suspended": False,
        }
        found.append({"uid": {"type": "Borrower", "id": f"b{i}"}, "attrs": attrs, "parents": []})
    for i in range(rest - employees - borrowers):
        attrs = {
            "kind": "personal",
            "amount": rng.randint(1_000, 900_000),
            "status": "submitted",
            "owner": ref("Borrower", f"b{i % borrowers}"),
            "partner": ref("Partner", f"p{i % 100}"),
            "officer": ref("Employee", f"e{i % employees}"),
        }
        found.append({"uid": {"type": "Loan", "id": f"l{i}"}, "attrs": attrs, "parents": []})
    return found


def write_store(folder: Path, count: int) -> Path:
    """A copy of policies/lending whose entities.json holds ``count`` generated entities."""
    store = folder / "stores" / "lending"
    shutil.copytree(ROOT / "policies" / "lending", store, ignore=shutil.ignore_patterns("tests"))
    (store / "entities.json").write_text(json.dumps(lending_entities(count)))
    return store


# glibc's malloc backed by transparent huge pages (glibc 2.35+; the kernel's THP setting
# "madvise" or "always"): fewer page faults for the gigabytes a large load touches.
HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def run_command(
    stores: Path, redis_url: str, env: dict[str, str] | None = None
) -> dict[str, float]:
    """One `verdict entities load`, timed from start to exit; its summary's write time."""
    command = [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores)]
    started = time.perf_counter()
    cpu_before = _children_cpu()
    done = subprocess.run(
        [*command, "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"entities load failed:\n{done.stderr}")
    written = re.search(r"Redis writes ([0-9.]+)s", done.stdout)
    assert written is not None, done.stdout
    phases = {
        name: float(value)
        for name, value in re.findall(r"^(\w+): done, .*?([0-9.]+)s$", done.stderr, re.M)
    }
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "write_seconds": float(written[1]),
        **phases,
    }


def _children_cpu() -> float:
    """User and system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Collected(PartChecks):
    """Keeps the parts instead of checking them, to time the parse and Cedar apart."""

    def __init__(self) -> None:
        super().__init__(None, threads=1)
        self.parts: list[str] = []

    def submit(self, entities: Sequence[StoredEntity]) -> None:
        self.parts.append("[" + ",".join(e.text or "" for e in entities) + "]")


def floors(store: Path, redis_url: str) -> dict[str, float]:
    """json.loads of the file, Verdict's parse in parts, Cedar's parse and schema check of
    the whole file and of the parts, and the Redis writes of the parsed entities (their CPU
    in this process), in this process."""
    text = (store / "entities.json").read_text()
    schema = cedar.parse_schema((store / "schema.cedarschema").read_text(), is_json=False)
    started = time.perf_counter()
    with collector_paused():  # as the command parses (the collector doubled json.loads' time)
        json.loads(text)
    parsed = time.perf_counter() - started
    collected = _Collected()
    started = time.perf_counter()
    with collector_paused():
        entities = parse_in_parts(text, collected, DEFAULT_HIERARCHY)
    verdict_parse = time.perf_counter() - started
    collected.close()
    started = time.perf_counter()
    assert cedar.entities_conform(text, schema)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    assert all(cedar.entities_conform(part, schema) for part in collected.parts)
    parts = time.perf_counter() - started
    cpu = time.process_time()
    with collector_paused():
        asyncio.run(_write(entities, redis_url))
    writes = time.process_time() - cpu
    return {
        "json_loads": parsed,
        "verdict_parse": verdict_parse,
        "writes_cpu": writes,
        "cedar_validate": whole,
        "cedar_parts": parts,
        "parts": len(collected.parts),
    }


async def _write(entities: Sequence[StoredEntity], redis_url: str) -> None:
    """Stage and switch ``entities`` as the command does, for the CPU it costs this process."""
    settings = Settings(redis_url=redis_url, redis_timeout_seconds=120)
    layout = key_layout(settings)
    client = make_client(settings)
    store = RedisEntityStore(client, EntityCache(0, 0), layout=layout, op_timeout=120)
    try:
        await store.prepare()
        await load_entities(store, "floor", entities)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="30,000 entities, one run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count, runs = (30_000, 1) if args.quick else (args.entities, args.runs)
    # Bytecode as an installed package has it (pip compiles it at install): where
    # PYTHONDONTWRITEBYTECODE is set, each run would otherwise compile every changed module.
    compileall.compile_dir(ROOT / "src" / "verdict", quiet=1)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as redis:
        store = write_store(Path(tmp), count)
        size = (store / "entities.json").stat().st_size
        measured, huge = [], []
        for _ in range(runs):  # interleaved: the default, then with huge pages
            measured.append(run_command(store.parent, redis.url))
            huge.append(run_command(store.parent, redis.url, HUGE_PAGES))
        floor = floors(store, redis.url)
    median = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
    huge_median = {key: statistics.median(m[key] for m in huge) for key in huge[0]}
    result = {
        "entities": count,
        "file_bytes": size,
        "runs": measured,
        "median": median,
        "huge_pages": {"env": HUGE_PAGES, "runs": huge, "median": huge_median},
        "entities_per_second": count / median["seconds"],
        "write_entities_per_second": count / median["write_seconds"],
        "floors": floor,
        "target_entities_per_second": TARGET,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "entities_load.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out)


def report(result: dict[str, Any], out: Path) -> None:
    median, floor, count = result["median"], result["floors"], result["entities"]
    # Two processes on two cores: each parses and writes half; Cedar sees one entity per kind.
    bound = (floor["verdict_parse"] + floor["writes_cpu"]) / 2
    # Whatever the design, if Cedar checks every entity: the C parse, Cedar and the writes.
    cedar_floor = (floor["json_loads"] + floor["cedar_parts"] + floor["writes_cpu"]) / 2
    huge = result["huge_pages"]["median"]
    lines = [
        f"# `verdict entities load`: {count:,} entities ({result['file_bytes'] / 1e6:.0f} MB)",
        "",
        f"Machine: {result['machine']}. Median of {len(result['runs'])} runs, real Redis.",
        "",
        "| | seconds | entities/s |",
        "|---|---|---|",
        f"| whole command (start to exit) | {median['seconds']:.2f} | "
        f"{result['entities_per_second']:,.0f} (target {TARGET:,}) |",
        f"| CPU of the command (user + system, both cores) | {median['cpu_seconds']:.2f} | |",
        f"| whole command with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` | {huge['seconds']:.2f} | "
        f"{count / huge['seconds']:,.0f} (CPU {huge['cpu_seconds']:.2f} s) |",
        f"| of which Redis writes | {median['write_seconds']:.2f} | "
        f"{result['write_entities_per_second']:,.0f} |",
    ]
    for phase in ("read", "parse", "validate", "write"):
        if phase in median:
            lines.append(f"| phase `{phase}` (its own line) | {median[phase]:.2f} | |")
    lines += [
        f"| floor: `json.loads` of the file | {floor['json_loads']:.2f} | "
        f"{count / floor['json_loads']:,.0f} |",
        f"| floor: Verdict's parse in parts (proven chunks, else strict), without Cedar | "
        f"{floor['verdict_parse']:.2f} | {count / floor['verdict_parse']:,.0f} |",
        f"| floor: Cedar parse + schema check, whole file | {floor['cedar_validate']:.2f} | "
        f"{count / floor['cedar_validate']:,.0f} |",
        f"| floor: Cedar parse + schema check, {floor['parts']} parts in a row | "
        f"{floor['cedar_parts']:.2f} | {count / floor['cedar_parts']:,.0f} |",
        f"| floor: Redis writes of the parsed entities, CPU of the writer | "
        f"{floor['writes_cpu']:.2f} | {count / floor['writes_cpu']:,.0f} |",
        f"| floor had Cedar to check every entity: `json.loads`, Cedar's parts and the "
        f"writes' CPU over two cores | {cedar_floor:.2f} | {count / cedar_floor:,.0f} |",
        "",
        "The command forks: it parses, checks and stages the first half of the file, a child",
        "process the second; Cedar checks one entity of each kind (store/entity_kinds.py), on",
        "threads beside the parse. The parent switches the load once both halves and the",
        "checks across them passed.",
        f"On two cores that needs at least {bound:.1f} s ({count / bound:,.0f} entities/s): the "
        f"Verdict's parse and the writes ({2 * bound:.1f} CPU-seconds) over two cores, interpreter",
        "start, Redis's own CPU and the fork not counted.",
        f"At the target the command would have {count / TARGET:.1f} s, "
        f"{2 * count / TARGET:.0f} CPU-seconds on two cores. Had Cedar to check every entity, "
        "its check,",
        f"the fastest parse Python has and the writes alone would take {2 * cedar_floor:.1f} "
        "CPU-seconds.",
    ]
    (out / "entities_load.md").write_text("\n".join(lines) + "\n")
    names = ["whole command", "Redis writes", "json.loads", "Verdict's parse", "Cedar, parts"]
    values = [
        median["seconds"],
        median["write_seconds"],
        floor["json_loads"],
        floor["verdict_parse"],
        floor["cedar_parts"],
    ]
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.barh(names, values, color=["#1f77b4", "#2ca02c", "#999999", "#999999", "#999999"])
    axes.axvline(count / TARGET, color="red", linestyle="--", label=f"target {TARGET:,}/s")
    axes.set_xlabel("seconds")
    axes.set_title(f"entities load, {count:,} entities")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "entities_load.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("VERDICT_LOG_FORMAT", "console")
    main()
