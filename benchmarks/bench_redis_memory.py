"""Memory per 100,000 entities: in Redis (after `verdict entities load`) and in a worker's cache.

For docs/deploy.md, "Sizing". Real processes on loopback: a fresh redis-server per size, the
synthetic lending entities of bench_entity_store (same generator, same seed), loaded with the
`verdict entities load` command; Redis's own INFO memory before and after. Then the local entity
cache: this process reads every entity through RedisEntityStore.fetch_slice into an EntityCache
sized to hold them all, and its resident set size is compared before and after.

Run from the repository root: .venv/bin/python -m benchmarks.bench_redis_memory [--sizes ...]
Writes benchmarks/results/redis_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_entity_store import STORE, synthetic_entities, write_store_copy
from tests.redis_support import RedisProcess, redis_server
from verdict.config import Settings
from verdict.model import EntityUid
from verdict.store.base import ReadOptions
from verdict.store.entity_cache import EntityCache
from verdict.store.redis_connect import make_client
from verdict.store.redis_store import RedisEntityStore

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "redis_memory.json"
ROOTS_PER_READ = 50  # uids per fetch_slice while filling the cache


def memory_info(redis: RedisProcess) -> dict[str, int]:
    """The byte counts of INFO memory that matter for sizing."""
    text = redis.cli("INFO", "memory")
    wanted = ("used_memory", "used_memory_dataset", "used_memory_rss", "used_memory_peak")
    return {k: int(v) for k, v in re.findall(r"^(\w+):(\d+)\r?$", text, re.M) if k in wanted}


def rss_bytes() -> int:
    """This process's resident set size."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match[1]) * 1024


def load_with_cli(stores: Path, redis: RedisProcess) -> float:
    """`verdict entities load` as an operator runs it; its wall time."""
    argv = [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores)]
    argv += ["--store", STORE, "--redis-url", redis.url]
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


async def cache_cost(redis: RedisProcess, uids: list[EntityUid]) -> dict[str, Any]:
    """Resident bytes this process gains by caching every entity it reads."""
    settings = Settings(redis_url=redis.url, redis_timeout_seconds=5.0)
    cache = EntityCache(len(uids) + 1, 3600.0)
    # As the invalidation listener does once subscribed: fills are taken from now on.
    cache.subscribed()
    store = RedisEntityStore(make_client(settings), cache, op_timeout=5.0)
    await store.prepare()
    gc.collect()
    before = rss_bytes()
    half: tuple[int, int] = (0, 0)
    try:
        for start in range(0, len(uids), ROOTS_PER_READ):
            await store.fetch_slice(STORE, uids[start : start + ROOTS_PER_READ], ReadOptions())
            if not half[0] and len(cache) >= len(uids) // 2:
                gc.collect()
                half = (len(cache), rss_bytes())
    finally:
        await store.close()
    gc.collect()
    after = rss_bytes()
    # The second half's slope too: the first includes the interpreter's one-off growth.
    slope = (after - half[1]) / max(1, len(cache) - half[0])
    return {
        "cached_entries": len(cache),
        "rss_gain_bytes": after - before,
        "rss_bytes_per_entry_second_half": round(slope),
    }


def measure(size: int, workdir: Path, with_cache: bool) -> dict[str, Any]:
    """One size: Redis memory after the load (and the cache's cost when asked)."""
    entities = synthetic_entities(size)
    stores = write_store_copy(workdir / str(size), entities)
    json_bytes = (stores / STORE / "entities.json").stat().st_size
    with redis_server(workdir / f"redis-{size}") as redis:
        empty = memory_info(redis)
        seconds = load_with_cli(stores, redis)
        loaded = memory_info(redis)
        result: dict[str, Any] = {
            "entities": size,
            "entities_json_bytes": json_bytes,
            "load_seconds": round(seconds, 2),
            "redis_empty": empty,
            "redis_loaded": loaded,
            "redis_bytes_per_100k": round(
                (loaded["used_memory"] - empty["used_memory"]) * 100_000 / size
            ),
        }
        if with_cache:
            uids = [EntityUid(e["uid"]["type"], e["uid"]["id"]) for e in entities]
            result["cache"] = asyncio.run(cache_cost(redis, uids))
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure each size; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verdict-redis-memory-") as tmp:
        runs = [measure(size, Path(tmp), size == max(args.sizes)) for size in args.sizes]
    report = {
        "redis": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
