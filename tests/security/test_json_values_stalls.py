"""Requests of many small JSON values within the 4 MiB message limit do not stall the loop.

Beside the shapes of test_attack_stalls: a batch whose items add up (each within its limits),
and full-size messages of empty lists, which json.loads alone took 0.5-1.5 s to build (even
in a worker thread, since it holds the GIL). Generous bounds, as there: the target is 50 ms.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from tests.security.input_server import Served, loop_held_while, outcome, serve_stores, uid
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb

STALL_BOUND = 0.5
INVALID = grpc.StatusCode.INVALID_ARGUMENT
STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("ctx") permit(principal, action, resource) when { context has ok };\n',
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
}
EMPTY_LISTS = "[]," * 1_390_000 + "[]"  # 1.39 million values in 4.17 MB, under 4 MiB


def light(context: str = "") -> pb.IsAuthorizedRequest:
    return pb.IsAuthorizedRequest(
        principal=uid("User::u"),
        action=uid("Action::read"),
        resource=uid("Doc::d"),
        context_json=context,
    )


async def worst_wait(served: Served, heavy: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The longest the event loop was held while ``heavy`` ran, and heavy's outcome."""
    await served.authz.IsAuthorized(light(), timeout=5)
    return await loop_held_while(outcome(heavy()))


async def test_batch_of_heavy_contexts_does_not_stall(tmp_path: Path) -> None:
    """100 items of 40 KB nested-list contexts: refused (each over its limit, and together
    over the batch's budget) without a stall."""
    write_store(tmp_path, "s", STORE)
    context = json.dumps({"l": [[[[[[i]]]]] for i in range(2_400)]})
    batch = pb.BatchAuthorizeRequest(requests=[light(context)] * 100)
    async with serve_stores(tmp_path, default_store="s") as served:
        worst, (code, _) = await worst_wait(
            served, lambda: served.authz.BatchAuthorize(batch, timeout=30)
        )
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
    assert code == INVALID


async def test_full_size_context_of_empty_lists_does_not_stall(tmp_path: Path) -> None:
    """A 4 MiB context of 1.39 million empty lists is refused without a stall."""
    write_store(tmp_path, "s", STORE)
    request = light('{"l": [' + EMPTY_LISTS + "]}")
    async with serve_stores(tmp_path, default_store="s") as served:
        worst, (code, details) = await worst_wait(
            served, lambda: served.authz.IsAuthorized(request, timeout=30)
        )
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
    # max_context_bytes refuses it before parsing; under it, max_context_values would.
    assert (code, details) == (INVALID, "context_json: is larger than 1048576 bytes")


async def test_full_size_write_of_empty_lists_does_not_stall(tmp_path: Path) -> None:
    """A 4 MiB PutEntities of one entity of empty lists is refused, naming it, without a
    stall (the write is parsed in a worker thread, which json.loads would not have let go)."""
    write_store(tmp_path, "s", STORE)
    text = '[{"uid": {"type": "Blob", "id": "b"}, "attrs": {"l": [' + EMPTY_LISTS + "]}}]"
    write = epb.PutEntitiesRequest(policy_store_id="s", entities_json=text)
    async with serve_stores(tmp_path, default_store="s") as served:
        worst, (code, details) = await worst_wait(
            served, lambda: served.entities.PutEntities(write, timeout=30)
        )
    assert worst < STALL_BOUND, f"the event loop was held {worst:.2f} s"
    assert (code, details) == (
        INVALID,
        "entities_json[0]: holds more than 1000 JSON values (the server's limit per item)",
    )
