"""Request (inline) entities cannot grant stored or invented principals, or actions, anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.stores import entity, write_store
from verdict.app import App, build_app, start, stop
from verdict.client import AsyncVerdictClient
from verdict.config import Settings
from verdict.errors import RequestError
from verdict.model import AuthorizationRequest, Decision, EntityUid

Files = dict[str, str | list[Any]]
ADMIN_POLICY = '@id("admins") permit(principal in Role::"admin", action, resource);\n'
TEAM_STORE: dict[str, str | list[Any]] = {
    "p.cedar": ADMIN_POLICY,
    # bob's team is referenced but not stored: the gap a caller tried to fill.
    "entities.json": [entity("User", "bob", parents=[("Team", "eng")]), entity("Doc", "d")],
}
TEAM_ADMIN = entity("Team", "eng", parents=[("Role", "admin")])
MALLORY = {
    "uid": {"type": "Employee", "id": "mallory"},
    "attrs": {
        "name": "Mallory",
        "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        "department": "Operations",
        "approval_limit": 0,
        "suspended": False,
    },
    "parents": [{"type": "Role", "id": "admin"}],
}
ACTION_STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("readers") permit(principal, action in Action::"readers", resource);\n',
    "entities.json": [entity("User", "u"), entity("Doc", "d"), entity("Action", "readers")],
    "store.toml": 'request_entity_types = ["Doc"]\n',
}
ACTION_IN_READERS = entity("Action", "delete", parents=[("Action", "readers")])


def ask(
    principal: str, action: str, resource: str, *entities: Any, **kw: Any
) -> AuthorizationRequest:
    p_type, _, p_id = principal.partition("::")
    r_type, _, r_id = resource.partition("::")
    return AuthorizationRequest(
        EntityUid(p_type, p_id),
        EntityUid("Action", action),
        EntityUid(r_type, r_id),
        kw.get("context", {}),
        extra_entities=tuple(entities),
    )


def app_for(stores: Path) -> App:
    return build_app(Settings(stores=stores, listen="127.0.0.1:0"))


@asynccontextmanager
async def served(app: App) -> AsyncIterator[AsyncVerdictClient]:
    server = await start(app)
    try:
        async with AsyncVerdictClient(f"127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await stop(app, 0)


async def expect_invalid(app: App, request: AuthorizationRequest, field: str) -> None:
    with pytest.raises(RequestError) as info:
        await app.authorizer.authorize(request)
    assert info.value.field == field


async def expect_invalid_over_grpc(
    client: AsyncVerdictClient, request: AuthorizationRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.is_authorized(
            request.principal,
            request.action,
            request.resource,
            context=dict(request.context),
            entities=list(request.extra_entities),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field + ":")


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("# no request_entity_types\n", "entities_json[0]"),
        ('request_entity_types = ["Team"]\n', "entities_json[0].parents[0]"),
    ],
)
async def test_inline_group_of_a_stored_user_is_refused(
    tmp_path: Path, toml: str, field: str
) -> None:
    """An inline Team that a stored user points at cannot make that user an admin."""
    write_store(tmp_path, "s", {**TEAM_STORE, "store.toml": toml})
    app = app_for(tmp_path)
    request = ask("User::bob", "read", "Doc::d", TEAM_ADMIN)
    # Unlisted: refused for its type; listed: refused for its parent (Role::"admin" is not
    # inline), before the slice check would refuse it as a uid bob refers to.
    await expect_invalid(app, request, field)
    async with served(app) as client:
        await expect_invalid_over_grpc(client, request, field)
    plain = await app.authorizer.authorize(ask("User::bob", "read", "Doc::d"))
    assert plain.decision is Decision.DENY


async def test_inline_entity_referenced_by_a_stored_attribute_is_refused(tmp_path: Path) -> None:
    """A uid a stored entity references through an attribute cannot be supplied inline either."""
    files: Files = {
        "p.cedar": '@id("m") permit(principal, action, resource) when { resource.owner.vip };\n',
        "entities.json": [
            entity("User", "u"),
            entity("Doc", "d", {"owner": {"__entity": {"type": "User", "id": "ghost"}}}),
        ],
        "store.toml": 'request_entity_types = ["User"]\n',
    }
    write_store(tmp_path, "s", files)
    ghost = entity("User", "ghost", {"vip": True})
    await expect_invalid(
        app_for(tmp_path), ask("User::u", "read", "Doc::d", ghost), "entities_json[0]"
    )


async def test_invented_lending_admin_is_refused(lending_app: App) -> None:
    """An invented Employee sent inline with parent Role::admin gets no admin permit."""
    request = ask("Employee::mallory", "view", "Loan::loan-1001", MALLORY, context=BASE_CONTEXT)
    await expect_invalid(lending_app, request, "entities_json[0]")
    app = build_app(lending_app.settings.model_copy(update={"listen": "127.0.0.1:0"}))
    async with served(app) as client:
        await expect_invalid_over_grpc(client, request, "entities_json[0]")


async def test_inline_action_cannot_join_an_action_group(tmp_path: Path) -> None:
    """Without a schema, an inline Action entity cannot put itself into an action group."""
    write_store(tmp_path, "s", ACTION_STORE)
    app = app_for(tmp_path)
    request = ask("User::u", "delete", "Doc::d", ACTION_IN_READERS)
    await expect_invalid(app, request, "entities_json[0]")
    async with served(app) as client:
        await expect_invalid_over_grpc(client, request, "entities_json[0]")
    assert (
        await app.authorizer.authorize(ask("User::u", "delete", "Doc::d"))
    ).decision is Decision.DENY


async def test_namespaced_action_is_refused(tmp_path: Path) -> None:
    """Any type named ``<ns>::Action`` is an action type and is never accepted inline."""
    write_store(tmp_path, "s", {**ACTION_STORE, "store.toml": "# no request_entity_types\n"})
    nested = entity("App::Action", "delete", parents=[("App::Action", "readers")])
    await expect_invalid(
        app_for(tmp_path), ask("User::u", "read", "Doc::d", nested), "entities_json[0]"
    )


async def test_types_not_listed_are_refused_by_default(tmp_path: Path) -> None:
    """With no request_entity_types in store.toml every inline entity is refused."""
    write_store(tmp_path, "s", {**TEAM_STORE, "store.toml": "# no request_entity_types\n"})
    fresh = entity("Doc", "new")
    await expect_invalid(
        app_for(tmp_path), ask("User::bob", "read", "Doc::new", fresh), "entities_json[0]"
    )


async def test_listed_type_for_an_unstored_unreferenced_entity_is_accepted(tmp_path: Path) -> None:
    """A listed type describing an entity nobody stored or references is used for that request."""
    files: Files = {
        "p.cedar": '@id("drafts") permit(principal, action, resource) when { resource.draft };\n',
        "entities.json": [entity("User", "u")],
        "store.toml": 'request_entity_types = ["Doc"]\n',
    }
    write_store(tmp_path, "s", files)
    result = await app_for(tmp_path).authorizer.authorize(
        ask("User::u", "read", "Doc::new", entity("Doc", "new", {"draft": True}))
    )
    assert result.decision is Decision.ALLOW
