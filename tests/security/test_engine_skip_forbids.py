"""Under "skip" only erroring permits are skipped: an erroring forbid still makes it DENY."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.security.input_server import OK, ask, outcome, serve_stores
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.app import build_app
from verdict.config import Settings
from verdict.model import AuthorizationRequest as Request
from verdict.model import Decision, EntityUid

SCHEMA = """
entity User = { suspended: Bool };
entity Doc;
type Ctx = { delegate: User };
action read appliesTo { principal: [User], resource: [Doc], context: Ctx };
"""
READERS = '@id("readers") permit(principal, action == Action::"read", resource);\n'
FORBID = (
    '@id("no-suspended-delegate") forbid(principal, action, resource)\n'
    "  when { context.delegate.suspended };\n"
)
PERMIT = (
    '@id("active-delegate") permit(principal, action, resource)\n'
    "  when { !context.delegate.suspended };\n"
)
ENTITIES = [
    entity("User", "u", {"suspended": False}),
    entity("User", "mallory", {"suspended": True}),
    entity("Doc", "d"),
]
SKIP = 'validation = "strict"\non_evaluation_error = "skip"\n'


def store(root: Path, policies: str, toml: str = SKIP) -> Path:
    files: dict[str, str | list[Any]] = {
        "p.cedar": policies,
        "schema.cedarschema": SCHEMA,
        "entities.json": ENTITIES,
        "store.toml": toml,
    }
    write_store(root, "s", files)
    return root


def delegated(delegate: str) -> Request:
    context = {"delegate": {"__entity": {"type": "User", "id": delegate}}}
    return Request(
        EntityUid("User", "u"), EntityUid("Action", "read"), EntityUid("Doc", "d"), context
    )


async def test_erroring_forbid_denies_in_a_batch(tmp_path: Path) -> None:
    """A batch (one Cedar call over a union) also denies for an erroring forbid."""
    app = build_app(Settings(stores=store(tmp_path, READERS + FORBID)))
    answers = await app.authorizer.authorize_batch([delegated("ghost"), delegated("u")])
    ghost, honest = answers
    assert not isinstance(ghost, Exception)
    assert not isinstance(honest, Exception)
    assert (ghost.decision, ghost.denied_for_errors) == (Decision.DENY, True)
    assert [e.policy_id for e in ghost.errors] == ["no-suspended-delegate"]
    assert (honest.decision, honest.determining_policies) == (Decision.ALLOW, ("readers",))


async def test_erroring_forbid_denies_over_grpc(tmp_path: Path) -> None:
    """Over gRPC, IsAuthorized and BatchAuthorize both answer DENY for the dangling delegate."""
    message = ask(
        "s",
        "User::u",
        "Doc::d",
        {"delegate": {"__entity": {"type": "User", "id": "ghost"}}},
        action="Action::read",
    )
    async with serve_stores(store(tmp_path, READERS + FORBID)) as served:
        code, reply = await outcome(served.authz.IsAuthorized(message, timeout=5))
        assert code is OK
        assert reply.decision == pb.DECISION_DENY
        batch = pb.BatchAuthorizeRequest(requests=[message, message])
        code, replies = await outcome(served.authz.BatchAuthorize(batch, timeout=5))
    assert code is OK
    assert [r.response.decision for r in replies.results] == [pb.DECISION_DENY] * 2


async def test_erroring_permit_is_still_skipped(tmp_path: Path) -> None:
    """Skip keeps Cedar's answer for an erroring permit: another permit ALLOWs, errors listed."""
    app = build_app(Settings(stores=store(tmp_path, READERS + PERMIT)))
    result = await app.authorizer.authorize(delegated("ghost"))
    assert (result.decision, result.denied_for_errors) == (Decision.ALLOW, False)
    assert result.determining_policies == ("readers",)
    assert [e.policy_id for e in result.errors] == ["active-delegate"]


async def test_erroring_permit_denies_under_deny(tmp_path: Path) -> None:
    """The default mode, by contrast, denies for the same erroring permit."""
    app = build_app(Settings(stores=store(tmp_path, READERS + PERMIT, 'validation = "strict"\n')))
    result = await app.authorizer.authorize(delegated("ghost"))
    assert (result.decision, result.denied_for_errors) == (Decision.DENY, True)
