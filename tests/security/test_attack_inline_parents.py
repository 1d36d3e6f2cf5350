"""Attack round 3: a request entity of a listed type must not join a stored group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc

from tests.security.input_server import OK, outcome, serve_stores, uid
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb

ADMIN_POLICY = '@id("admins") permit(principal in Role::"admin", action, resource);\n'
STORE: dict[str, str | list[Any]] = {
    "p.cedar": ADMIN_POLICY,
    "entities.json": [entity("Role", "admin"), entity("User", "u"), entity("Doc", "d")],
    # Callers may describe new documents, nothing else.
    "store.toml": 'request_entity_types = ["Doc"]\n',
}


async def test_inline_entity_cannot_claim_a_stored_role_as_parent(tmp_path: Path) -> None:
    """An inline Doc claiming the stored Role::"admin" as its parent is refused, never ALLOW."""
    write_store(tmp_path, "s", STORE)
    claim = [entity("Doc", "x", parents=[("Role", "admin")])]
    request = pb.IsAuthorizedRequest(
        principal=uid("Doc::x"),
        action=uid("Action::delete"),
        resource=uid("Doc::d"),
        entities_json=json.dumps(claim),
    )
    async with serve_stores(tmp_path, default_store="s") as served:
        code, reply = await outcome(served.authz.IsAuthorized(request, timeout=5))
    if code is OK:
        assert reply.decision != pb.DECISION_ALLOW, "inline entity joined a stored admin role"
    else:
        assert code is grpc.StatusCode.INVALID_ARGUMENT
