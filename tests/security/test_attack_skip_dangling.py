"""Attack round 3: "skip" with a strict schema still lets a caller dodge a forbid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores import entity, write_store
from verdict.app import build_app
from verdict.config import Settings
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, Decision, EntityUid

SCHEMA = """
entity User = { suspended: Bool };
entity Doc;
type Ctx = { delegate: User };
action read appliesTo { principal: [User], resource: [Doc], context: Ctx };
"""
POLICIES = """
@id("readers") permit(principal, action == Action::"read", resource);
@id("no-suspended-delegate") forbid(principal, action, resource)
  when { context.delegate.suspended };
"""
STORE: dict[str, str | list[Any]] = {
    "p.cedar": POLICIES,
    "schema.cedarschema": SCHEMA,
    "entities.json": [
        entity("User", "u", {"suspended": False}),
        entity("User", "mallory", {"suspended": True}),
        entity("Doc", "d"),
    ],
    "store.toml": 'validation = "strict"\non_evaluation_error = "skip"\n',
}


def read_with_delegate(delegate: str) -> AuthorizationRequest:
    return AuthorizationRequest(
        EntityUid("User", "u"),
        EntityUid("Action", "read"),
        EntityUid("Doc", "d"),
        {"delegate": {"__entity": {"type": "User", "id": delegate}}},
    )


async def test_skip_store_does_not_allow_a_forbid_dodged_by_a_missing_entity(
    tmp_path: Path,
) -> None:
    """A delegate that does not exist makes the forbid error; the answer must not be ALLOW."""
    write_store(tmp_path, "s", STORE)
    app = build_app(Settings(stores=tmp_path, listen="127.0.0.1:0"))
    # The honest request with a suspended delegate is denied by the forbid ...
    denied = await app.authorizer.authorize(read_with_delegate("mallory"))
    assert denied.decision is Decision.DENY
    # ... and naming an invented delegate must not turn that into ALLOW.
    try:
        result = await app.authorizer.authorize(read_with_delegate("nobody-at-all"))
    except VerdictError:
        return
    if result.decision is Decision.ALLOW:
        pytest.fail(f"forbid skipped through a dangling reference: {result.errors}")
