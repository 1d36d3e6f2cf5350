"""Tests of the decision engine: shared cases, slicing, fail-closed behaviour and request errors."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from tests.cases import BASE_CONTEXT, DecisionCase, lending_cases
from tests.stores import entity, write_store
from verdict.app import App, entity_files
from verdict.engine.authorizer import Authorizer
from verdict.errors import (
    BatchTooLargeError,
    EntityDataError,
    InternalError,
    RequestError,
    StoreUnavailableError,
    VerdictError,
)
from verdict.model import AuthorizationRequest, AuthorizationResult, Decision, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.base import DEFAULT_READ, EntitySlice, ReadOptions, StoredEntity
from verdict.store.entity_file import read_entities_file
from verdict.store.memory import MemoryEntityStore


def authorizer_for(stores_dir: Path, default: str = "s") -> Authorizer:
    snapshot = load_policy_stores(stores_dir, default)
    return Authorizer(PolicyHolder(snapshot), MemoryEntityStore.from_files(entity_files(snapshot)))


def request(
    principal: str, action: str, resource: str, context: dict[str, Any] | None = None, **kwargs: Any
) -> AuthorizationRequest:
    p_type, _, p_id = principal.partition("::")
    r_type, _, r_id = resource.partition("::")
    return AuthorizationRequest(
        EntityUid(p_type, p_id),
        EntityUid("Action", action),
        EntityUid(r_type, r_id),
        context or {},
        **kwargs,
    )


@pytest.mark.parametrize("case", lending_cases(), ids=str)
async def test_lending_cases(lending_app: App, case: DecisionCase) -> None:
    """Every shared lending case gets its expected decision and determining policies."""
    result = await lending_app.authorizer.authorize(case.request)
    assert result.decision.value == case.expect
    assert set(result.determining_policies) == case.determining
    assert result.policy_version == lending_app.policies.current.stores["lending"].version


async def test_missing_principal_errors_never_allow(lending_app: App) -> None:
    """An unknown principal makes guardrails error; the result is DENY with the errors listed."""
    result = await lending_app.authorizer.authorize(
        AuthorizationRequest(
            EntityUid("Employee", "ghost"),
            EntityUid("Action", "view"),
            EntityUid("Loan", "loan-1001"),
            BASE_CONTEXT,
        )
    )
    assert result.decision is Decision.DENY
    assert {e.policy_id for e in result.errors} >= {"forbid-suspended-principal"}
    assert all("ghost" not in e.message for e in result.errors)


FORBID_ERRORS: dict[str, str | list[Any]] = {
    "p.cedar": '@id("allow-all") permit(principal, action, resource);\n'
    '@id("block-flagged") forbid(principal, action, resource)'
    " when { principal.flagged };",
    "entities.json": [entity("User", "u")],
}


async def test_erroring_forbid_denies_by_default(tmp_path: Path) -> None:
    """A forbid that errors (missing attribute) cannot let a permit win: DENY, error reported."""
    write_store(tmp_path, "s", FORBID_ERRORS)
    result = await authorizer_for(tmp_path).authorize(request("User::u", "view", "Doc::d"))
    assert result.decision is Decision.DENY
    assert result.denied_for_errors
    assert result.determining_policies == ()
    assert [(e.policy_id, e.message) for e in result.errors] == [
        ("block-flagged", "attribute `flagged` not found")
    ]


async def test_erroring_forbid_still_denies_under_skip(tmp_path: Path) -> None:
    """Under on_evaluation_error = "skip" an erroring forbid still makes an ALLOW a DENY."""
    schema = "entity User = { flagged: Bool }; entity Doc;\n"
    schema += "action view appliesTo { principal: [User], resource: [Doc] };\n"
    files = {**FORBID_ERRORS, "schema.cedarschema": schema, "entities.json": []}
    # "skip" needs a schema; the forbid errors because the principal is not stored. Cedar
    # alone would skip it and ALLOW; skip drops erroring permits only.
    write_store(tmp_path, "s", {**files, "store.toml": 'on_evaluation_error = "skip"'})
    result = await authorizer_for(tmp_path).authorize(request("User::ghost", "view", "Doc::d"))
    assert result.decision is Decision.DENY
    assert result.denied_for_errors
    assert result.determining_policies == ()
    assert [e.policy_id for e in result.errors] == ["block-flagged"]


class RaisingStore:
    """An entity store whose reads fail, as a broken backend would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailableError("down"),
        EntityDataError("corrupt"),
        RuntimeError("loan-1001 amount 50000"),
    ],
)
async def test_store_failures_never_allow(lending_app: App, error: Exception) -> None:
    """Whatever the store raises, no decision is returned (and never ALLOW)."""
    authorizer = Authorizer(lending_app.policies, RaisingStore(error))
    (case,) = [c for c in lending_cases() if c.expect == "allow"][:1]
    with pytest.raises(type(error)):
        await authorizer.authorize(case.request)
    (item,) = await authorizer.authorize_batch([case.request])
    assert isinstance(item, StoreUnavailableError | EntityDataError | InternalError)
    assert "50000" not in str(item)


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (request("Employee::olivia", "fly", "Loan::loan-1001", BASE_CONTEXT), "action"),
        (request("Loan::loan-1001", "view", "Loan::loan-1001", BASE_CONTEXT), "principal"),
        (request("Employee::olivia", "view", "Employee::uma", BASE_CONTEXT), "resource"),
        (request("Employee::olivia", "view", "Loan::loan-1001", {"mfa": True}), "context_json"),
        (
            request("Employee::olivia", "view", "Loan::loan-1001", {**BASE_CONTEXT, "x": 1}),
            "context_json",
        ),
        (
            request("Employee::olivia", "view", "Loan::loan-1001", {**BASE_CONTEXT, "mfa": "yes"}),
            "context_json",
        ),
        (
            request("Employee::olivia", "view", "Loan::loan-1001", {**BASE_CONTEXT, "now": "x"}),
            "context_json",
        ),
        (
            request("Employee::olivia", "view", "Loan::loan-1001", BASE_CONTEXT, store_id="nope"),
            "policy_store_id",
        ),
    ],
)
async def test_invalid_requests_name_the_field(
    lending_app: App, req: AuthorizationRequest, field: str
) -> None:
    """Requests the schema rejects are RequestErrors naming the field, never a decision."""
    with pytest.raises(RequestError) as info:
        await lending_app.authorizer.authorize(req)
    assert info.value.field == field


async def test_extra_entities_supplement_the_store(lending_app: App) -> None:
    """Request entities are used for this request only and must fit the schema."""
    new_loan: dict[str, Any] = {
        "uid": {"type": "Loan", "id": "loan-new"},
        "parents": [],
        "attrs": {
            "kind": "auto",
            "amount": 100,
            "status": "draft",
            "owner": {"__entity": {"type": "Borrower", "id": "alice"}},
            "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        },
    }
    req = request(
        "Borrower::alice", "update", "Loan::loan-new", BASE_CONTEXT, extra_entities=(new_loan,)
    )
    result = await lending_app.authorizer.authorize(req)
    assert result.determining_policies == ("borrower-update-own-draft-loan",)
    without = request("Borrower::alice", "update", "Loan::loan-new", BASE_CONTEXT)
    assert (await lending_app.authorizer.authorize(without)).decision is Decision.DENY
    bad = {**new_loan, "attrs": {**new_loan["attrs"], "amount": "lots"}}
    with pytest.raises(RequestError) as info:
        await lending_app.authorizer.authorize(
            request(
                "Borrower::alice", "update", "Loan::loan-new", BASE_CONTEXT, extra_entities=(bad,)
            )
        )
    assert info.value.field == "entities_json[0]"
    assert info.value.problem == (
        'Loan::"loan-new": attribute `amount` has a value of the wrong type'
    )  # named, never its value ("lots")


async def test_extra_entities_cannot_replace_stored_ones(lending_app: App) -> None:
    """A caller cannot shadow a stored entity (e.g. un-suspend themselves) per request."""
    fake = {
        "uid": {"type": "Borrower", "id": "dave"},
        "parents": [],
        "attrs": {
            "name": "Dave",
            "kyc_verified": True,
            "suspended": False,
            "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        },
    }
    with pytest.raises(RequestError) as info:
        await lending_app.authorizer.authorize(
            request(
                "Borrower::dave", "view", "Loan::loan-1008", BASE_CONTEXT, extra_entities=(fake,)
            )
        )
    assert info.value.field == "entities_json[0]"


SLICE_STORE: dict[str, str | list[Any]] = {
    "p.cedar": '@id("group") permit(principal in Group::"admins", action, resource);\n'
    '@id("deep") permit(principal, action, resource)'
    " when { resource.folder.owner.manager == principal };\n"
    '@id("ctx") permit(principal, action, resource)'
    " when { context has delegate && context.delegate has trusted && context.delegate.trusted };",
    "entities.json": [
        entity("User", "root", parents=[("Group", "ops")]),
        entity("Group", "ops", parents=[("Group", "admins")]),
        entity("Group", "admins"),
        entity("User", "boss"),
        entity("User", "owner", {"manager": {"__entity": {"type": "User", "id": "boss"}}}),
        entity("Folder", "f", {"owner": {"__entity": {"type": "User", "id": "owner"}}}),
        entity("Doc", "d", {"folder": {"__entity": {"type": "Folder", "id": "f"}}}),
        entity("User", "friend", {"trusted": True}),
        entity("User", "nobody"),
    ],
}


@pytest.mark.parametrize(
    ("principal", "context", "policy"),
    [
        ("User::root", {}, "group"),
        ("User::boss", {}, "deep"),
        ("User::nobody", {"delegate": {"__entity": {"type": "User", "id": "friend"}}}, "ctx"),
    ],
)
async def test_slice_reaches_everything_policies_can(
    tmp_path: Path, principal: str, context: dict[str, Any], policy: str
) -> None:
    """Ancestors, attribute chains three hops deep and context references are all loaded."""
    write_store(tmp_path, "s", SLICE_STORE)
    result = await authorizer_for(tmp_path).authorize(request(principal, "view", "Doc::d", context))
    assert policy in result.determining_policies
    assert result.decision is Decision.ALLOW


@pytest.mark.parametrize(
    "odd_id", ['quo"te', "back\\slash", "new\nline", "ünï©ødé ✓", 'all\\"\n\\n', "::", " "]
)
async def test_ids_are_taken_verbatim(tmp_path: Path, odd_id: str) -> None:
    """Ids with quotes, backslashes, newlines and unicode match exactly, never by accident."""
    write_store(
        tmp_path,
        "s",
        {
            "p.cedar": "permit(principal, action, resource) when { principal.ok };",
            "entities.json": [
                entity("User", odd_id, {"ok": True}),
                entity("User", odd_id + "x", {"ok": False}),
            ],
        },
    )
    authorizer = authorizer_for(tmp_path)
    allowed = await authorizer.authorize(
        AuthorizationRequest(
            EntityUid("User", odd_id), EntityUid("Action", "a"), EntityUid("Doc", odd_id)
        )
    )
    denied = await authorizer.authorize(
        AuthorizationRequest(
            EntityUid("User", odd_id + "x"), EntityUid("Action", "a"), EntityUid("Doc", odd_id)
        )
    )
    assert allowed.decision is Decision.ALLOW
    assert denied.decision is Decision.DENY


async def test_batch_answers_in_order_and_isolates_errors(lending_app: App) -> None:
    """Each batch item is answered in order; a bad item does not affect the others."""
    cases = lending_cases()
    bad = request("Employee::olivia", "fly", "Loan::loan-1001", BASE_CONTEXT)
    items: list[AuthorizationRequest | VerdictError] = [
        cases[0].request,
        bad,
        RequestError("principal", "is required"),
        cases[1].request,
    ]
    results = await lending_app.authorizer.authorize_batch(items)
    assert [type(r).__name__ for r in results] == [
        "AuthorizationResult",
        "RequestError",
        "RequestError",
        "AuthorizationResult",
    ]
    assert results[0].decision.value == cases[0].expect  # type: ignore[union-attr]
    assert results[3].decision.value == cases[1].expect  # type: ignore[union-attr]


async def test_batch_limit(lending_app: App) -> None:
    """A batch over the limit is refused as a whole."""
    with pytest.raises(BatchTooLargeError, match="more than 100 items in one batch"):
        await lending_app.authorizer.authorize_batch([lending_cases()[0].request] * 101)


async def test_corrupt_stored_entity_fails_closed(tmp_path: Path) -> None:
    """Stored data that fails the schema at evaluation is an EntityDataError, not a decision."""
    write_store(
        tmp_path,
        "s",
        {
            "schema.cedarschema": "entity User { ok: Bool }; entity Doc;\n"
            "action view appliesTo { principal: User, resource: Doc };",
            "p.cedar": "permit(principal, action, resource) when { principal.ok };",
            "entities.json": [entity("User", "u", {"ok": True})],
        },
    )
    snapshot = load_policy_stores(tmp_path, "s")
    uid = EntityUid("User", "u")
    corrupt = MemoryEntityStore(
        {"s": {uid: StoredEntity(uid, entity("User", "u", {"ok": "yes"}), frozenset())}}
    )
    authorizer = Authorizer(PolicyHolder(snapshot), corrupt)
    with pytest.raises(EntityDataError):
        await authorizer.authorize(request("User::u", "view", "Doc::d"))


async def test_batch_answers_equal_single_answers(lending_app: App) -> None:
    """A batch of every shared case (shared Cedar call) answers each exactly as alone."""
    requests = [c.request for c in lending_cases()]
    batch = await lending_app.authorizer.authorize_batch(list(requests))
    for request, answer in zip(requests, batch, strict=True):
        alone = await lending_app.authorizer.authorize(request)
        assert answer == alone


async def test_corrupt_entity_fails_only_the_batch_items_that_reach_it(lending_app: App) -> None:
    """An entity failing the schema spoils only the items whose slices contain it."""
    lending = lending_app.policies.current.resolve("lending")
    assert lending.entities_file is not None
    entities = read_entities_file(lending.entities_file, lending.schema)
    uma = EntityUid("Employee", "uma")
    broken = {**entities[uma].json, "attrs": {"suspended": "yes"}}
    entities[uma] = StoredEntity(uma, broken, frozenset())
    authorizer = Authorizer(lending_app.policies, MemoryEntityStore({"lending": entities}))
    cases = [c for c in lending_cases() if c.principal.id in ("uma", "alice", "sam")]
    answers = await authorizer.authorize_batch([c.request for c in cases])
    for case, answer in zip(cases, answers, strict=True):
        if case.principal == uma:
            assert isinstance(answer, EntityDataError)
        else:
            assert isinstance(answer, AuthorizationResult)
            assert answer.decision.value == case.expect
