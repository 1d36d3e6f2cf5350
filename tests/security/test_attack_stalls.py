"""Attack round 3: one request of nested JSON under the 4 MiB message limit must not stall others.

Generous bounds: the target is 50 ms of loop time per request; these fail only on stalls of a
half a second or more (measured 1-10 s for the full-size payloads on 2 cores).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.security.input_server import Served, loop_held_while, outcome, serve_stores, uid
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb

STALL_BOUND = 0.5  # seconds the loop may be held (10x the 50 ms target)
STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("ctx") permit(principal, action, resource) when { context has ok };\n',
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["Doc"]\n',
}
NESTED = [[[[[[i]]]]] for i in range(80_000)]  # ~1.4 MB of JSON, well under 4 MiB


def light() -> pb.IsAuthorizedRequest:
    return pb.IsAuthorizedRequest(
        principal=uid("User::u"), action=uid("Action::read"), resource=uid("Doc::d")
    )


async def worst_wait(served: Served, heavy: Callable[[], Awaitable[Any]]) -> float:
    """The longest the event loop (server and client share it) was held while ``heavy`` ran."""
    await served.authz.IsAuthorized(light(), timeout=5)
    worst, _ = await loop_held_while(outcome(heavy()))
    return worst


async def test_nested_context_does_not_stall_the_loop(tmp_path: Path) -> None:
    """A context of 80,000 small nested lists is refused or evaluated without a stall."""
    write_store(tmp_path, "s", STORE)
    request = light()
    request.context_json = json.dumps({"l": NESTED})
    async with serve_stores(tmp_path, default_store="s") as served:
        worst = await worst_wait(served, lambda: served.authz.IsAuthorized(request, timeout=30))
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"


async def test_nested_inline_entities_do_not_stall_the_loop(tmp_path: Path) -> None:
    """Inline entities holding 80,000 nested lists are refused or used without a stall."""
    write_store(tmp_path, "s", STORE)
    chunk = len(NESTED) // 10
    docs = [entity("Doc", f"x{k}", {"l": NESTED[k * chunk : (k + 1) * chunk]}) for k in range(10)]
    request = light()
    request.entities_json = json.dumps(docs)
    async with serve_stores(tmp_path, default_store="s") as served:
        worst = await worst_wait(served, lambda: served.authz.IsAuthorized(request, timeout=30))
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"


async def test_nested_entity_write_does_not_stall_the_loop(tmp_path: Path) -> None:
    """A PutEntities of 40 entities (each under 64 KiB) of nested lists does not stall decisions."""
    write_store(tmp_path, "s", STORE)
    chunk = len(NESTED) // 40
    blobs = [entity("Blob", f"b{k}", {"l": NESTED[k * chunk : (k + 1) * chunk]}) for k in range(40)]
    write = epb.PutEntitiesRequest(policy_store_id="s", entities_json=json.dumps(blobs))
    async with serve_stores(tmp_path, default_store="s") as served:
        worst = await worst_wait(served, lambda: served.entities.PutEntities(write, timeout=30))
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
