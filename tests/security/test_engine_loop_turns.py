"""Large writes and heavy batches leave the event loop free for other requests meanwhile
(the stall itself is measured in benchmarks/bench_loop_stall.py, not asserted here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.cases import lending_cases
from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.model import AuthorizationRequest, Decision, EntityUid


def employee(index: int) -> dict[str, Any]:
    attrs = {
        "name": f"E{index}",
        "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        "department": "Retail Lending",
        "approval_limit": 0,
        "suspended": False,
    }
    return entity("Employee", f"bulk-{index}", attrs, parents=[("Role", "loan_officer")])


class Turns:
    """Counts how often the loop let a bystander task run while ``work`` was under way."""

    def __init__(self) -> None:
        self.count = 0
        self.done = False

    async def tick(self) -> None:
        while not self.done:
            self.count += 1
            await asyncio.sleep(0)

    async def during(self, work: Any) -> Any:
        ticker = asyncio.create_task(self.tick())
        await asyncio.sleep(0)
        self.count = 0
        try:
            return await work
        finally:
            self.done = True
            await ticker


async def test_a_10000_entity_write_lets_decisions_run(lending_app: App) -> None:
    """Decisions started after a 10,000-entity PutEntities began finish before it does."""
    payload = json.dumps([employee(i) for i in range(10_000)])
    case = next(c for c in lending_cases() if c.expect == "allow")
    write = asyncio.create_task(lending_app.writes.put("lending", payload))
    await asyncio.sleep(0)
    answered = []
    while not write.done():
        result = await lending_app.authorizer.authorize(case.request)
        answered.append(result.decision)
        await asyncio.sleep(0.001)
    _, written = await write
    assert written == 10_000
    assert len(answered) >= 10  # the previous path answered none until the write was done
    assert set(answered) == {Decision.ALLOW}


async def test_a_heavy_batch_gives_the_loop_turns(tmp_path: Path) -> None:
    """A batch of items with large slices is prepared and evaluated in several turns."""
    members = [entity("User", f"m{i}") for i in range(400)]
    refs = [{"__entity": {"type": "User", "id": f"m{i}"}} for i in range(400)]
    files: dict[str, str | list[Any]] = {
        "p.cedar": '@id("all") permit(principal, action, resource);\n',
        "entities.json": [*members, entity("Doc", "d", {"readers": refs}), entity("User", "u")],
    }
    write_store(tmp_path, "s", files)
    app = build_app(Settings(stores=tmp_path))
    request = AuthorizationRequest(
        EntityUid("User", "u"), EntityUid("Action", "read"), EntityUid("Doc", "d")
    )
    turns = Turns()
    answers = await turns.during(app.authorizer.authorize_batch([request] * 50))
    assert all(getattr(a, "decision", None) is Decision.ALLOW for a in answers)
    assert turns.count >= 8, turns.count  # the previous path: 3 (prepared and evaluated at once)
