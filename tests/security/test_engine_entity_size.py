"""An entity larger than max_entity_bytes (default 64 KiB of JSON) is refused at write."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.client import AsyncVerdictClient
from verdict.errors import RequestError
from verdict.model import EntityUid
from verdict.store.weight import entity_text

LIMIT = 64 * 1024


def partner(id_: str, name: str) -> dict[str, Any]:
    return {
        "uid": {"type": "Partner", "id": id_},
        "attrs": {"name": name, "kind": "bank", "active": True},
        "parents": [],
    }


def json_bytes(entity: dict[str, Any]) -> int:
    """Its bytes as stored (compact JSON, non-ASCII as it is: ``entity_text``)."""
    return len(entity_text(entity).encode())


def sized(id_: str, size: int, char: str = "x") -> dict[str, Any]:
    """A Partner whose JSON is exactly ``size`` bytes (``char`` is 1 or 2 bytes in UTF-8)."""
    base = json_bytes(partner(id_, ""))
    width = len(char.encode())
    assert (size - base) % width == 0
    entity = partner(id_, char * ((size - base) // width))
    assert json_bytes(entity) == size
    return entity


async def test_an_entity_over_the_limit_is_refused_and_nothing_is_written(
    lending_app: App,
) -> None:
    """One entity of 64 KiB + 1 byte fails the whole call, naming its index."""
    batch = [partner("small-bank", "Small"), sized("big-bank", LIMIT + 1)]
    with pytest.raises(RequestError) as info:
        await lending_app.writes.put("lending", json.dumps(batch))
    assert (info.value.field, info.value.problem) == (
        "entities_json[1]",
        f"is larger than {LIMIT} bytes of JSON",
    )
    found, _ = await lending_app.writes.get("lending", [EntityUid("Partner", "small-bank")])
    assert found == {}


async def test_the_limit_counts_utf8_bytes(lending_app: App) -> None:
    """Exactly 64 KiB is accepted; a multi-byte text is measured in bytes, not characters."""
    _, written = await lending_app.writes.put("lending", json.dumps([sized("at", LIMIT)]))
    assert written == 1
    with pytest.raises(RequestError) as info:
        # 65,537 bytes, but only 32,719 characters of text.
        await lending_app.writes.put("lending", json.dumps([sized("wide", LIMIT + 1, "é")]))
    assert info.value.field == "entities_json[0]"


async def test_oversized_entity_over_grpc(client: AsyncVerdictClient) -> None:
    """PutEntities answers INVALID_ARGUMENT naming the item."""
    stub = epb_grpc.EntityServiceStub(client._channel)
    request = epb.PutEntitiesRequest(
        policy_store_id="lending", entities_json=json.dumps([sized("big", 2 * LIMIT)])
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PutEntities(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"entities_json[0]: is larger than {LIMIT} bytes of JSON"
    get = epb.GetEntitiesRequest(
        policy_store_id="lending", uids=[pb.EntityUid(type="Partner", id="big")]
    )
    assert len((await stub.GetEntities(get, timeout=5)).missing) == 1
