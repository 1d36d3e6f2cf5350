"""Entity writes within the value limits are checked by Cedar in chunks bounded by JSON values,
not only by entity count: 200 entities of max_entity_values each were one Cedar call holding
the event loop for most of a second."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.security.input_server import outcome, serve_stores
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import entities_pb2 as epb
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
        done = False
        worst = 0.0

        async def lag_monitor() -> None:
            nonlocal worst
            while not done:
                started = time.perf_counter()
                await asyncio.sleep(0.002)
                worst = max(worst, time.perf_counter() - started - 0.002)

        task = asyncio.create_task(lag_monitor())
        await asyncio.sleep(0.05)
        code, reply = await outcome(served.entities.PutEntities(write, timeout=60))
        done = True
        await task
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
    assert code.name == "OK"
    assert reply.written == 300
