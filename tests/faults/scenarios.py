"""The faults, one function each: inject, hold, remove, and note what the suite saw."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.faults.load import Oracle, Phase, Revocation, SteadyLoad
from tests.faults.rig import Rig
from verdict.model import EntityUid

ENTITIES_KEY = "verdict:{lending}:entities"
REFS_KEY = "verdict:{lending}:refs"


@dataclass(frozen=True)
class Timing:
    """How long each part of a phase lasts (seconds)."""

    steady: float  # before a fault and after it is removed
    hold: float  # how long a fault lasts
    down: float  # how long Redis stays down (longer than the cache grace)
    grace: float  # the server's cache_grace_seconds


@dataclass
class Context:
    rig: Rig
    load: SteadyLoad
    oracle: Oracle
    timing: Timing


Scenario = Callable[[Context, Phase], Awaitable[None]]


def now() -> float:
    return time.monotonic()


async def baseline(ctx: Context, phase: Phase) -> None:
    phase.fault_started = phase.fault_ended = now()
    await asyncio.sleep(ctx.timing.steady)


async def redis_restarted_with_data(ctx: Context, phase: Phase) -> None:
    redis = ctx.rig.redis
    await asyncio.sleep(ctx.timing.steady)
    redis.cli("SAVE")
    phase.fault_started = now()
    redis.stop()  # SIGKILL: a crash
    await asyncio.sleep(ctx.timing.down)
    redis.start()  # reads its dump file back
    phase.fault_ended = now()
    await asyncio.sleep(ctx.timing.steady)


async def redis_restarted_empty(ctx: Context, phase: Phase) -> None:
    rig, timing = ctx.rig, ctx.timing
    await asyncio.sleep(timing.steady)
    rig.writing = False  # a write would mark the store loaded again (see docs/faults.md)
    (rig.redis.workdir / "dump.rdb").unlink(missing_ok=True)
    phase.fault_started = now()
    rig.redis.stop()
    await asyncio.sleep(timing.down)
    rig.redis.start()
    restarted = now()
    await asyncio.sleep(timing.hold)
    await rig.reload()
    phase.fault_ended = now()
    rig.writing = True
    empty = [
        o for o in ctx.load.outcomes if restarted <= o.started and o.ended <= phase.fault_ended
    ]
    phase.notes["ok_while_empty"] = sum(o.code == "OK" for o in empty)
    phase.notes["unavailable_while_empty"] = sum(o.code == "UNAVAILABLE" for o in empty)
    await asyncio.sleep(timing.steady)


async def redis_slowed(ctx: Context, phase: Phase) -> None:
    await asyncio.sleep(ctx.timing.steady)
    ctx.rig.proxy.latency = 0.3
    phase.fault_started = now()
    await asyncio.sleep(ctx.timing.hold)
    ctx.rig.proxy.latency = 0.0
    phase.fault_ended = now()
    phase.notes["added_latency_ms"] = 300
    await asyncio.sleep(ctx.timing.steady)


async def redis_dropping_connections(ctx: Context, phase: Phase) -> None:
    await asyncio.sleep(ctx.timing.steady)
    phase.fault_started = now()
    cuts = 0
    while now() - phase.fault_started < ctx.timing.hold:
        cuts += ctx.rig.proxy.cut()
        await asyncio.sleep(0.2)
    phase.fault_ended = now()
    phase.notes["connections_cut"] = cuts
    await asyncio.sleep(ctx.timing.steady)


async def corrupt_entities(ctx: Context, phase: Phase) -> None:
    """Garbage written behind Verdict's back: not JSON, an entity under another uid's key, an
    entity whose refs field is gone. Repaired by writing the entities again."""
    rig = ctx.rig
    await asyncio.sleep(ctx.timing.steady)
    phase.fault_started = now()
    rig.redis.cli("HSET", ENTITIES_KEY, '["Employee","uma"]', "not json {")
    wrong = {"v": 1, "e": rig.entity("Borrower::alice")}
    rig.redis.cli("HSET", ENTITIES_KEY, '["Borrower","dave"]', json.dumps(wrong))
    rig.redis.cli("HDEL", REFS_KEY, '["Employee","victor"]')
    await asyncio.sleep(ctx.timing.hold)
    await rig.put(*(rig.entity(u) for u in ("Employee::uma", "Borrower::dave", "Employee::victor")))
    phase.fault_ended = now()
    await asyncio.sleep(ctx.timing.steady)


async def invalidations_lost(ctx: Context, phase: Phase) -> None:
    """The server's pub/sub connection is cut and cannot come back while another replica
    suspends uma and later restores her: decisions must follow within the cache grace."""
    rig, timing = ctx.rig, ctx.timing
    await asyncio.sleep(timing.steady)
    rig.proxy.block_subscribers = True
    rig.proxy.cut(subscribers_only=True)
    phase.fault_started = now()
    await asyncio.sleep(0.5)
    uma = rig.entity("Employee::uma")
    suspended = {**uma, "attrs": {**uma["attrs"], "suspended": True}}
    started = now()
    await rig.put(suspended)
    committed = now()
    await asyncio.sleep(timing.grace + timing.hold)
    restore_started = now()
    await rig.put(uma)
    revocation = Revocation(
        EntityUid("Employee", "uma"), started, committed, restore_started, now()
    )
    ctx.oracle.revocations.append(revocation)
    await asyncio.sleep(1.0)
    rig.proxy.block_subscribers = False
    phase.fault_ended = now()
    await asyncio.sleep(timing.grace + timing.steady)
    phase.notes.update(revocation_notes(ctx, revocation))


def revocation_notes(ctx: Context, revocation: Revocation) -> dict[str, float | int | None]:
    """How long uma's suspension took to be enforced, and how many ALLOWs it saw meanwhile."""
    cases = ctx.oracle.cases
    uma = [
        o
        for o in ctx.load.outcomes
        if cases[o.case].principal == revocation.principal and cases[o.case].expect == "allow"
    ]
    during = [o for o in uma if revocation.committed <= o.started < revocation.restore_started]
    first_deny = next((o.ended for o in during if o.code == "OK" and not o.allowed), None)
    return {
        "revocation_enforced_after_s": (
            None if first_deny is None else round(first_deny - revocation.committed, 2)
        ),
        "allowed_after_revocation_within_grace": sum(
            o.code == "OK" and bool(o.allowed) for o in during
        ),
        "denied_after_revocation": sum(o.code == "OK" and not o.allowed for o in during),
    }


async def sigterm_under_load(ctx: Context, phase: Phase) -> None:
    """SIGTERM while calls wait on a slowed Redis: in-flight calls must be answered."""
    rig = ctx.rig
    assert rig.server is not None
    await asyncio.sleep(ctx.timing.steady)
    rig.proxy.latency = 0.2  # keeps cache misses in flight for a while
    await asyncio.sleep(0.5)
    phase.fault_started = now()
    rig.server.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(rig.server.wait, 30)
    exited = now()
    rig.proxy.latency = 0.0
    rig.start_server()
    phase.fault_ended = now()
    ready = await rig.wait_ready()
    in_flight = [o for o in ctx.load.outcomes if o.started < phase.fault_started < o.ended]
    phase.notes.update(
        exit_code=exit_code,
        drain_seconds=round(exited - phase.fault_started, 2),
        restart_ready_seconds=round(ready, 2),
        in_flight_at_sigterm=len(in_flight),
        in_flight_answered=sum(o.code == "OK" for o in in_flight),
        in_flight_lost=sum(o.code not in ("OK", "UNAVAILABLE") for o in in_flight),
    )
    await asyncio.sleep(ctx.timing.steady)


async def client_flood(ctx: Context, phase: Phase) -> None:
    """A second process opens 400 concurrent callers, each call a cache miss, while Redis
    answers 50 ms late: calls pile up in progress, far past max_concurrent_calls, and are
    refused RESOURCE_EXHAUSTED. When the machine is busy the loop takes calls from grpc core
    more slowly than they arrive, and core's pending-call limit refuses most of them first
    (CANCELLED): either refusal counts, what must not happen is a flood nothing refuses."""
    ctx.rig.proxy.latency = 0.05
    await _flood(ctx, phase, "misses", refusals=("RESOURCE_EXHAUSTED", "CANCELLED"))
    ctx.rig.proxy.latency = 0.0


async def cpu_flood(ctx: Context, phase: Phase) -> None:
    """A second process opens 400 concurrent callers of one cached decision, each waiting
    50 ms after a refusal: calls are CPU-bound and wait in grpc core, past max_pending_calls."""
    await _flood(ctx, phase, "hits", refusals=("CANCELLED",), backoff=0.05)


async def _flood(
    ctx: Context, phase: Phase, kind: str, *, refusals: tuple[str, ...], backoff: float = 0.0
) -> None:
    rig = ctx.rig
    await asyncio.sleep(ctx.timing.steady)
    phase.fault_started = now()
    command = [sys.executable, "-m", "tests.faults.flood", rig.target, "400"]
    result = await asyncio.to_thread(
        subprocess.run,
        [*command, str(ctx.timing.hold), kind, str(backoff)],
        capture_output=True,
        timeout=120,
    )
    phase.fault_ended = now()
    flood = json.loads(result.stdout)
    phase.notes.update(
        flood_codes=flood["codes"],
        flood_refusals=list(refusals),
        flood_answered_per_s=flood["answered_per_s"],
        flood_admitted_p99_ms=round(flood["admitted_p99_ms"] or 0, 1),
        flood_admitted_max_ms=round(flood["admitted_max_ms"] or 0, 1),
    )
    await asyncio.sleep(ctx.timing.steady)


SCENARIOS: list[tuple[str, str, Scenario]] = [
    ("baseline", "none", baseline),
    ("redis_restarted_with_data", "Redis SIGKILLed, restarted from its dump",
     redis_restarted_with_data),
    ("redis_restarted_empty", "Redis SIGKILLed, restarted empty, then reloaded",
     redis_restarted_empty),
    ("redis_slowed", "+300 ms on every Redis reply (proxy)", redis_slowed),
    ("redis_dropping_connections", "every Redis connection cut every 200 ms (proxy)",
     redis_dropping_connections),
    ("corrupt_entities", "HSET garbage / wrong uid / HDEL refs behind Verdict's back",
     corrupt_entities),
    ("invalidations_lost", "pub/sub cut and kept out while uma is suspended and restored",
     invalidations_lost),
    ("sigterm_under_load", "SIGTERM with calls in flight, then restart", sigterm_under_load),
    ("client_flood", "400 concurrent callers (cache misses, Redis +50 ms)", client_flood),
    ("cpu_flood", "400 concurrent callers of a cached decision (CPU-bound)", cpu_flood),
]  # fmt: skip
