"""Attack round 3: concurrent PutEntities calls must not store a parent cycle between them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.config import Settings
from verdict.errors import VerdictError
from verdict.model import EntityUid


async def test_two_concurrent_writes_cannot_close_a_cycle(tmp_path: Path) -> None:
    """G::a -> G::b and G::b -> G::a written at once: at most one is accepted."""
    write_store(
        tmp_path, "s", {"p.cedar": "permit(principal, action, resource);\n", "entities.json": []}
    )
    app = build_app(Settings(stores=tmp_path, listen="127.0.0.1:0"))
    first = json.dumps([entity("G", "a", parents=[("G", "b")])])
    second = json.dumps([entity("G", "b", parents=[("G", "a")])])
    results = await asyncio.gather(
        app.writes.put("s", first), app.writes.put("s", second), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, VerdictError | BaseException)]
    stored, _ = await app.writes.get("s", [EntityUid("G", "a"), EntityUid("G", "b")])
    parents = {u.id: [p["id"] for p in e["parents"]] for u, e in stored.items()}
    assert len(accepted) <= 1, f"both writes accepted; stored parents now {parents}"
