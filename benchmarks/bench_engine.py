"""The engine in process: ``authorize()`` µs per decision, memory store vs Redis cache hit, and
``authorize_batch`` with 1, 10 and 100 items (µs per decision), with pre-parsed entity handles
(``after``) and without (``before``: ``entity_handles = false``, the listed slice as before).

Run from the repository root: ``.venv/bin/python -m benchmarks.bench_engine``.
Writes ``benchmarks/results/engine.json``. Every figure is the median over interleaved
rounds of the mean µs per decision within a round (lending store, its shared decision cases in
turn), measured on the event loop exactly as the servicer calls the engine, with a real
redis-server on a loopback port for the Redis figures. Before timing, every answer is checked
against the shared cases, and the Redis rounds must be cache hits (a round trip per grace
period renews the store's "loaded" proof).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_entity_store import (
    POLICIES,
    RESULTS,
    STORE,
    expected,
    load_sample_entities,
    machine_info,
    redis_app,
)
from tests.cases import lending_cases
from tests.redis_support import redis_server
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.model import AuthorizationRequest, AuthorizationResult
from verdict.store.redis_store import RedisEntityStore

BATCH_SIZES = (1, 10, 100)
SETTLE_SECONDS = 1.5  # long enough for a pong to settle the fills of the warm-up


def requests_of(count: int) -> list[AuthorizationRequest]:
    """``count`` lending requests, the shared cases cycled."""
    cases = lending_cases()
    return [cases[i % len(cases)].request for i in range(count)]


async def check_answers(name: str, app: App) -> None:
    """Every shared case answered as expected, alone and in one batch (fills the cache too)."""
    cases = lending_cases()
    for case in cases:
        result = await app.authorizer.authorize(case.request)
        if not expected(case, result.allowed, result.determining_policies):
            raise RuntimeError(f"{name}: wrong answer for {case}")
    answers = await app.authorizer.authorize_batch([c.request for c in cases])
    for case, answer in zip(cases, answers, strict=True):
        if not isinstance(answer, AuthorizationResult) or not expected(
            case, answer.allowed, answer.determining_policies
        ):
            raise RuntimeError(f"{name}: wrong batch answer for {case}")


def timed_alone(app: App, count: int) -> Callable[[], Awaitable[float]]:
    """One round of ``authorize`` calls, one after another; µs per decision."""
    requests = requests_of(count)
    authorize = app.authorizer.authorize

    async def run() -> float:
        started = time.perf_counter()
        for request in requests:
            await authorize(request)
        return (time.perf_counter() - started) / count * 1e6

    return run


def timed_batch(app: App, size: int, count: int) -> Callable[[], Awaitable[float]]:
    """One round of ``authorize_batch`` calls of ``size`` items; µs per decision."""
    batches = max(1, count // size)
    items = requests_of(size)
    authorize_batch = app.authorizer.authorize_batch

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(batches):
            await authorize_batch(items)
        return (time.perf_counter() - started) / (batches * size) * 1e6

    return run


async def measure(apps: dict[str, App], rounds: int, count: int) -> dict[str, Any]:
    """Interleaved rounds of every variant; the median of each variant's rounds."""
    variants: dict[str, Callable[[], Awaitable[float]]] = {}
    for name, app in apps.items():
        variants[f"{name}/authorize"] = timed_alone(app, count)
        for size in BATCH_SIZES:
            variants[f"{name}/batch{size}"] = timed_batch(app, size, count)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    stores = [a.entities for a in apps.values() if isinstance(a.entities, RedisEntityStore)]
    trips = sum(s.round_trips for s in stores)
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(await run())
    decisions = len(stores) * rounds * count * (1 + len(BATCH_SIZES))
    # Without a health check, a store's "loaded" proof is renewed only by a read from Redis,
    # so a miss every grace period is expected; anything more would not measure cache hits.
    misses = (sum(s.round_trips for s in stores) - trips) / decisions
    if misses > 0.01:
        raise RuntimeError(f"redis-hit missed the cache on {misses:.1%} of decisions")
    figures = {
        name: {"median_us": statistics.median(s), "min_us": min(s)} for name, s in samples.items()
    }

    def ratio(one: str, other: str) -> float:
        return figures[one]["median_us"] / figures[other]["median_us"]

    return {
        "figures": figures,
        "redis_hit_over_memory": {
            label: ratio(f"{label}/redis-hit/authorize", f"{label}/memory/authorize")
            for label in ("before", "after")
        },
        "after_over_before": {
            name.removeprefix("after/"): ratio(name, "before/" + name.removeprefix("after/"))
            for name in figures
            if name.startswith("after/")
        },
        "redis_round_trips_per_decision": misses,
    }


async def run(rounds: int, count: int) -> dict[str, Any]:
    """Start Redis, build the apps (handles off and on), check answers, warm, measure."""
    memory = Settings(stores=POLICIES, default_store=STORE)
    off = {"entity_handles": False}
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as redis:
        apps = {
            "before/memory": build_app(memory.model_copy(update=off)),
            "after/memory": build_app(memory),
            "before/redis-hit": redis_app(redis.url, **off),
            "after/redis-hit": redis_app(redis.url),
        }
        try:
            for app in apps.values():
                await app.entities.prepare()
            await load_sample_entities(apps["after/redis-hit"])
            for app in apps.values():
                if app.listener is not None:
                    app.listener.start()
                    await asyncio.wait_for(app.listener.subscribed.wait(), 10)
            for name, app in apps.items():
                await check_answers(name, app)
            # Fills answer only once a pong has settled them; then warm once more.
            await asyncio.sleep(SETTLE_SECONDS)
            for name, app in apps.items():
                await check_answers(name, app)
            return await measure(apps, rounds, count)
        finally:
            for app in apps.values():
                if app.listener is not None:
                    await app.listener.stop()
                await app.entities.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and write ``results/engine_<label>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument("--count", type=int, default=1000, help="decisions per round")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.rounds, args.count))
    result = {
        "store": STORE,
        "policies": str(POLICIES.relative_to(POLICIES.parent)),
        "rounds": args.rounds,
        "decisions_per_round": args.count,
        "machine": machine_info(),
        **figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
