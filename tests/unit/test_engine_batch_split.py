"""Batch unions are split to stay within the per-request entity limits, answers unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.config import Settings
from verdict.model import AuthorizationRequest, Decision, EntityUid

STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("admins") permit(principal in Role::"admin", action, resource);\n',
}


def ask(principal: EntityUid) -> AuthorizationRequest:
    return AuthorizationRequest(principal, EntityUid("Action", "read"), EntityUid("Doc", "d1"))


async def test_a_batch_union_is_split_to_stay_within_the_slice_limit(tmp_path: Path) -> None:
    """Items whose slices together exceed max_slice_entities still get their single answers."""
    users = [
        entity("User", f"u{i}", parents=[("Role", "admin")] if i % 2 else []) for i in range(30)
    ]
    files: dict[str, str | list[Any]] = {
        **STORE,
        "entities.json": [*users, entity("Role", "admin")],
    }
    write_store(tmp_path, "s", files)
    app = build_app(Settings(stores=tmp_path, max_slice_entities=8))
    batch = [ask(EntityUid("User", f"u{i}")) for i in range(30)]
    together = await app.authorizer.authorize_batch(batch)
    alone = [await app.authorizer.authorize(r) for r in batch]
    assert together == alone
    assert [a.decision for a in alone] == [Decision.DENY, Decision.ALLOW] * 15
