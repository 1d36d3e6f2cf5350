"""An inline entity's parents are other inline entities of the same request, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores import entity, write_store
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.errors import RequestError
from verdict.model import AuthorizationRequest, Decision, EntityUid

POLICIES = """
@id("admins") permit(principal in Role::"admin", action, resource);
@id("eng") permit(principal in Team::"eng", action, resource);
@id("foldered") permit(principal, action == Action::"list", resource)
  when { resource in context.folder };
"""
STORE: dict[str, str | list[Any]] = {
    "p.cedar": POLICIES,
    # Team::"eng" is named by a policy but not stored: nobody is in it yet.
    "entities.json": [entity("Role", "admin"), entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["Doc", "Folder", "Team"]\n',
}


def ask(
    principal: str, action: str, *entities: dict[str, Any], **context: Any
) -> AuthorizationRequest:
    p_type, _, p_id = principal.partition("::")
    return AuthorizationRequest(
        EntityUid(p_type, p_id),
        EntityUid("Action", action),
        EntityUid("Doc", "d"),
        context,
        extra_entities=entities,
    )


@pytest.fixture
def app(tmp_path: Path) -> App:
    write_store(tmp_path, "s", STORE)
    return build_app(Settings(stores=tmp_path, listen="127.0.0.1:0"))


async def expect_invalid(app: App, request: AuthorizationRequest, field: str) -> None:
    with pytest.raises(RequestError) as info:
        await app.authorizer.authorize(request)
    assert info.value.field == field


async def test_stored_parent_is_refused(app: App) -> None:
    """An inline Doc naming the stored Role::"admin" as parent is refused on that parent."""
    doc = entity("Doc", "x", parents=[("Doc", "d"), ("Role", "admin")])
    await expect_invalid(app, ask("Doc::x", "delete", doc), "entities_json[0].parents[0]")


async def test_parent_absent_from_the_store_is_refused(app: App) -> None:
    """A parent that is neither inline nor stored is refused too: the caller owns no group."""
    doc = entity("Doc", "x", parents=[("Team", "nowhere")])
    await expect_invalid(app, ask("Doc::x", "delete", doc), "entities_json[0].parents[0]")


async def test_parent_named_by_a_policy_is_refused(app: App) -> None:
    """A group a policy names but nobody stored (Team::"eng") cannot be joined inline."""
    doc = entity("Doc", "x", parents=[("Team", "eng")])
    await expect_invalid(app, ask("Doc::x", "delete", doc), "entities_json[0].parents[0]")


async def test_entity_named_by_a_policy_cannot_be_described_inline(app: App) -> None:
    """Describing Team::"eng" itself (so an inline child could join it) is refused on it."""
    team = entity("Team", "eng")
    doc = entity("Doc", "x", parents=[("Team", "eng")])
    await expect_invalid(app, ask("Doc::x", "delete", doc, team), "entities_json[1]")


async def test_chain_through_inline_entities_to_a_stored_group_is_refused(app: App) -> None:
    """Inline A -> inline B -> stored Role::"admin" is refused at B's parent."""
    folder = entity("Folder", "b", parents=[("Role", "admin")])
    doc = entity("Doc", "a", parents=[("Folder", "b")])
    await expect_invalid(app, ask("Doc::a", "delete", doc, folder), "entities_json[1].parents[0]")
    # The order of the entities does not matter.
    await expect_invalid(app, ask("Doc::a", "delete", folder, doc), "entities_json[0].parents[0]")


async def test_hierarchy_among_inline_entities_still_works(app: App) -> None:
    """Inline Doc -> inline Folder -> inline Folder is accepted and Cedar follows it."""
    top = entity("Folder", "top")
    mid = entity("Folder", "mid", parents=[("Folder", "top")])
    doc = entity("Doc", "x", parents=[("Folder", "mid")])
    request = AuthorizationRequest(
        EntityUid("User", "u"),
        EntityUid("Action", "list"),
        EntityUid("Doc", "x"),
        {"folder": {"__entity": {"type": "Folder", "id": "top"}}},
        extra_entities=(doc, mid, top),
    )
    result = await app.authorizer.authorize(request)
    assert result.decision is Decision.ALLOW
    assert result.determining_policies == ("foldered",)
    # As a principal the inline chain grants no stored or named group.
    assert (await app.authorizer.authorize(ask("Doc::x", "delete", doc, mid, top))).decision is (
        Decision.DENY
    )
