"""The ~10,000-entity parent cycle that crashes cedarpy (SIGSEGV) never reaches it: every entry
point answers INVALID_ARGUMENT and the server process keeps serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.processes import ServerProcess, verdict_server
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import ALLOW, build_request

CYCLE = [entity("G", f"n{i}", parents=[("G", f"n{(i + 1) % 10_000}")]) for i in range(10_000)]
STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("all") permit(principal, action, resource);\n',
    "entities.json": [],
    "store.toml": 'request_entity_types = ["G"]\n',
}


def invalid(call: Any) -> str:
    """Run a call that must fail with INVALID_ARGUMENT; return the status details."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(error.details())


def still_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None
    assert server.client.is_authorized("G::x", "Action::read", "Doc::d").decision == ALLOW


@pytest.mark.parametrize("count_limit", [None, "20000"])
def test_cycle_payload_is_refused_on_every_entry_point(
    tmp_path: Path, count_limit: str | None
) -> None:
    """IsAuthorized, BatchAuthorize and PutEntities refuse the payload; the server lives on.

    With the default limits the JSON value count refuses it first; with the count, reference
    and value limits raised past the payload the cycle check must (it is what stood between
    the payload and cedarpy).
    """
    write_store(tmp_path, "s", STORE)
    env = {}
    if count_limit is not None:
        env = {"VERDICT_MAX_REQUEST_ENTITIES": count_limit}
        env["VERDICT_MAX_REQUEST_REFERENCES"] = count_limit
        env["VERDICT_MAX_REQUEST_ENTITY_VALUES"] = "1000000"
        env["VERDICT_MAX_BATCH_VALUES"] = "1000000"
    expected = "entities_json:" if count_limit is None else "entities_json["
    request = build_request("G::n0", "Action::read", "Doc::d", entities=CYCLE)
    with verdict_server("--stores", str(tmp_path), "--default-store", "s", env=env) as server:
        server.client.timeout = 60
        assert invalid(lambda: server.client.send(request)).startswith(expected)
        still_serving(server)
        batch = server.client.batch([request, build_request("G::x", "Action::read", "Doc::d")])
        first, second = batch.results
        assert first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert first.error.message.startswith(expected)
        assert second.response.decision == ALLOW
        still_serving(server)
        entities = epb_grpc.EntityServiceStub(server.client._channel)
        put = epb.PutEntitiesRequest(policy_store_id="s", entities_json=json.dumps(CYCLE))
        details = invalid(lambda: entities.PutEntities(put, timeout=60))
        assert details.startswith("entities_json[")
        assert details.endswith("its parents form a cycle back to itself")
        still_serving(server)
