"""Entity writes within the value limits are checked by Cedar in chunks bounded by JSON values,
not only by entity count: 200 entities of max_entity_values each were one Cedar call holding
the event loop for most of a second."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.security.input_server import loop_held_while, outcome, serve_stores
from tests.stores import entity, write_store
from verdict import cedar
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.app import build_app
from verdict.config import Settings
from verdict.engine.entity_writes import SCHEMA_CHUNK_VALUES, schema_chunks

STALL_BOUND = 0.5
# 12 JSON values; Cedar's costliest per value found (~4.3 us, benchmarks/bench_json_values.py).
OFFSET = {
    "__extn": {
        "fn": "offset",
        "args": [
            {"__extn": {"fn": "datetime", "arg": "2025-03-04"}},
            {"__extn": {"fn": "duration", "arg": "1h"}},
        ],
    }
}


def heavy(id_: str) -> dict[str, Any]:
    """An entity of 991 JSON values (7 for the entity, its uid, attrs, list and parents)."""
    return entity("Blob", id_, {"l": [OFFSET] * 82})


def test_chunks_are_bounded_by_values_and_entities() -> None:
    """Chunks close at 200 entities or SCHEMA_CHUNK_VALUES values, whichever comes first; an
    entity larger than a chunk's values is checked alone."""
    assert schema_chunks([10] * 450) == [(0, 200), (200, 400), (400, 450)]
    per_chunk = SCHEMA_CHUNK_VALUES // 1_000
    assert schema_chunks([1_000] * (per_chunk + 1)) == [(0, per_chunk), (per_chunk, per_chunk + 1)]
    assert schema_chunks([5, SCHEMA_CHUNK_VALUES * 2, 5]) == [(0, 1), (1, 2), (2, 3)]
    assert schema_chunks([]) == []


async def test_write_of_value_heavy_entities_does_not_stall(tmp_path: Path) -> None:
    """300 entities of 991 extension values each (at the default per-entity limit) are
    written without holding the loop: Cedar sees them a few thousand values at a time."""
    write_store(tmp_path, "s", {"p.cedar": "permit(principal, action, resource);\n"})
    text = json.dumps([heavy(f"b{i}") for i in range(300)])
    write = epb.PutEntitiesRequest(policy_store_id="s", entities_json=text)
    async with serve_stores(tmp_path, default_store="s") as served:
        worst, (code, reply) = await loop_held_while(
            outcome(served.entities.PutEntities(write, timeout=60))
        )
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
    assert code.name == "OK"
    assert reply.written == 300


async def test_timer_woken_tasks_run_between_every_two_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a write's Cedar checks run on the loop (10 chunks of ~4 heavy entities), a task
    woken by a 1 ms timer gets a turn between every two chunks, not every other one."""
    write_store(tmp_path, "s", {"p.cedar": "permit(principal, action, resource);\n"})
    app = build_app(Settings(stores=tmp_path, default_store="s"))
    text = json.dumps([heavy(f"b{i}") for i in range(40)])
    turns, done = 0, False
    turns_at_call: list[int] = []

    async def ticker() -> None:
        nonlocal turns
        while not done:
            await asyncio.sleep(0.001)
            turns += 1

    real = cedar.entity_problem

    def counted(*args: Any) -> Any:
        turns_at_call.append(turns)
        return real(*args)

    monkeypatch.setattr(cedar, "entity_problem", counted)  # counts calls; Cedar still runs
    task = asyncio.create_task(ticker())
    try:
        await app.writes.put("s", text)
    finally:
        done = True
        await task
    assert len(turns_at_call) == len(schema_chunks([991] * 40)) == 10
    between = [b - a for a, b in itertools.pairwise(turns_at_call)]
    assert min(between) >= 1, between
