"""A request may name at most max_request_references entities through its context and inline
entities: each is a store lookup, and Cedar's cost grows faster than linearly with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.config import Settings
from verdict.errors import RequestError
from verdict.model import AuthorizationRequest, Decision, EntityUid

STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("all") permit(principal, action, resource);\n',
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["Doc"]\n',
}


def with_refs(count: int, *entities: Any) -> AuthorizationRequest:
    refs = [{"__entity": {"type": "Nobody", "id": f"n{i}"}} for i in range(count)]
    return AuthorizationRequest(
        EntityUid("User", "u"),
        EntityUid("Action", "read"),
        EntityUid("Doc", "d"),
        {"refs": refs},
        extra_entities=tuple(entities),
    )


async def test_context_references_are_bounded(tmp_path: Path) -> None:
    """1,000 distinct references are answered; 60,000 are INVALID_ARGUMENT on context_json."""
    write_store(tmp_path, "s", STORE)
    app = build_app(Settings(stores=tmp_path))
    assert (await app.authorizer.authorize(with_refs(1000))).decision is Decision.ALLOW
    with pytest.raises(RequestError) as info:
        await app.authorizer.authorize(with_refs(60_000))
    assert (info.value.field, info.value.problem) == (
        "context_json",
        "makes the request refer to more than 1000 entities (the limit)",
    )


async def test_inline_entity_references_count_too(tmp_path: Path) -> None:
    """References inside request entities add to those of the context, naming the item."""
    write_store(tmp_path, "s", STORE)
    app = build_app(Settings(stores=tmp_path, max_request_references=50))
    extra = entity(
        "Doc", "new", {"more": [{"__entity": {"type": "X", "id": str(i)}} for i in range(20)]}
    )
    with pytest.raises(RequestError) as info:
        await app.authorizer.authorize(with_refs(40, extra))
    assert info.value.field == "entities_json[0]"
