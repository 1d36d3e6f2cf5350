"""A batch never evaluates an item against a state that never existed: slices read at different
entity versions are not merged into one Cedar call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tests.redis_support import redis_server
from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.model import AuthorizationRequest, AuthorizationResult, Decision, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.base import DEFAULT_READ, EntitySlice, ReadOptions, StoredEntity
from verdict.store.entity_file import build_entities
from verdict.store.memory import MemoryEntityStore

STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("admins") permit(principal in Role::"admin", action, resource);\n',
    "entities.json": [],
}
U, W = EntityUid("User", "u"), EntityUid("User", "w")
# State X: u -> g, and g has no parent. State Y: u has no parent, g -> Role::admin.
# In neither state is u an admin; w (always in g) is an admin in Y only.
STATE_X = [entity("User", "u", parents=[("Group", "g")]), entity("Group", "g")]
STATE_Y = [entity("User", "u"), entity("Group", "g", parents=[("Role", "admin")])]
W_IN_G = [entity("User", "w", parents=[("Group", "g")]), entity("Doc", "d1")]


def ask(principal: EntityUid) -> AuthorizationRequest:
    return AuthorizationRequest(principal, EntityUid("Action", "read"), EntityUid("Doc", "d1"))


BATCH = [ask(U), *[ask(W)] * 4]


def stored(entities: list[Any]) -> list[StoredEntity]:
    return list(build_entities(entities, None).values())


class ReadAcrossAWrite:
    """Two real memory stores, one before and one after the write X -> Y: u's slice is read
    before the write, every other item's after it, as interleaved reads of one store can be."""

    def __init__(self, before: MemoryEntityStore, after: MemoryEntityStore) -> None:
        self.before, self.after = before, after

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        store = self.before if U in roots else self.after
        return await store.fetch_slice(store_id, roots, options)


async def test_slices_of_different_versions_are_not_merged(tmp_path: Path) -> None:
    """u read at X and w read at Y: the union would make u an admin; u stays DENY."""
    write_store(tmp_path, "s", STORE)
    before, after = MemoryEntityStore({"s": {}}), MemoryEntityStore({"s": {}})
    assert await before.put("s", stored([*STATE_X, *W_IN_G])) == 1
    await after.put("s", stored([*STATE_X, *W_IN_G]))
    assert await after.put("s", stored(STATE_Y)) == 2
    holder = PolicyHolder(load_policy_stores(tmp_path, "s"))
    authorizer = Authorizer(holder, ReadAcrossAWrite(before, after))
    answers = await authorizer.authorize_batch(BATCH)
    assert all(isinstance(a, AuthorizationResult) for a in answers)
    decisions = [a.decision for a in answers if isinstance(a, AuthorizationResult)]
    assert decisions == [Decision.DENY, *[Decision.ALLOW] * 4]
    assert [a.entity_version for a in answers if isinstance(a, AuthorizationResult)] == [
        1,
        2,
        2,
        2,
        2,
    ]
    for state, store in ((1, before), (2, after)):  # each item alone agrees
        alone = await Authorizer(holder, store).authorize(ask(U))
        assert alone.decision is Decision.DENY, state


async def test_batches_under_churn_never_allow_u(tmp_path: Path) -> None:
    """A writer toggling X and Y through a second replica never makes u an admin in a batch."""
    write_store(tmp_path / "stores", "s", STORE)
    with redis_server(tmp_path / "redis") as redis:
        settings = Settings(stores=tmp_path / "stores", redis_url=redis.url)
        reader, writer = build_app(settings), build_app(settings)
        assert reader.listener is not None
        await writer.entities.put("s", stored([*STATE_X, *W_IN_G]))
        reader.listener.start()
        await asyncio.wait_for(reader.listener.subscribed.wait(), 10)
        stop = time.monotonic() + 3.0
        counts = {"batches": 0, "u_allow": 0, "w_allow": 0, "w_deny": 0, "mixed": 0}

        async def toggle() -> None:
            while time.monotonic() < stop:
                for state in (STATE_Y, STATE_X):
                    await writer.entities.put("s", stored(state))
                    await asyncio.sleep(0)

        async def ask_batches() -> None:
            while time.monotonic() < stop:
                answers = await reader.authorizer.authorize_batch(BATCH)
                results = [a for a in answers if isinstance(a, AuthorizationResult)]
                assert len(results) == len(BATCH), answers
                counts["batches"] += 1
                counts["u_allow"] += results[0].decision is Decision.ALLOW
                for result in results[1:]:
                    counts["w_allow" if result.allowed else "w_deny"] += 1
                counts["mixed"] += len({r.entity_version for r in results}) > 1

        try:
            await asyncio.gather(toggle(), *(ask_batches() for _ in range(4)))
        finally:
            await reader.listener.stop()
            await reader.entities.close()
            await writer.entities.close()
    print(counts)
    assert counts["u_allow"] == 0, counts
    # The churn was real: w saw both states, and batches read items at different versions.
    assert counts["w_allow"] > 0, counts
    assert counts["w_deny"] > 0, counts
    assert counts["batches"] > 50, counts
