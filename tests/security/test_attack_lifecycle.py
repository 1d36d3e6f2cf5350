"""Attack round on the policy lifecycle and explanations, against a running server.

Findings are tests asserting the correct behaviour (a strict xfail where not fixed yet); the
passing tests pin moves the server handles that no other test covers.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.cases import lending_cases
from tests.security.authn_support import verdict_app
from tests.stores import lending_copy, sparse
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES, MAX_POLICY_FILE_BYTES
from verdict.policy.snapshot import StoreSnapshot

CHANGE = apb.PolicyStoreState.Change
ALLOWED = next(c for c in lending_cases() if c.expect == "allow")

# A forbid template the operator links once per blocked person.
BLOCK_TEMPLATE = '@id("block-person")\nforbid (principal == ?principal, action, resource);\n'


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a rename, as editors and `kubectl cp` do."""
    staged = path.parent / f".{path.name}.tmp"
    staged.write_text(text)
    os.replace(staged, path)


async def reload(channel: grpc.aio.Channel) -> dict[str, apb.PolicyStoreState]:
    """AdminService/ReloadPolicies; each store's state by id."""
    reply = await apb_grpc.AdminServiceStub(channel).ReloadPolicies(
        apb.ReloadPoliciesRequest(), timeout=20
    )
    return {s.policy_store_id: s for s in reply.stores}


async def decide(
    channel: grpc.aio.Channel, request: pb.IsAuthorizedRequest
) -> pb.IsAuthorizedResponse:
    """One IsAuthorized call."""
    reply: pb.IsAuthorizedResponse = await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
        request, timeout=10
    )
    return reply


def allowed_case(store: str = "lending") -> pb.IsAuthorizedRequest:
    """The first allowed lending case."""
    return build_request(
        ALLOWED.principal, ALLOWED.action, ALLOWED.resource, context=ALLOWED.context, store=store
    )


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """A stores folder holding a copy of the lending store."""
    return lending_copy(tmp_path)


@pytest.fixture
async def lending(stores: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A server over ``stores`` (file watching off: reloads happen only when a test asks)."""
    async with verdict_app(stores=stores, default_store="lending", policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            yield channel


# --- Finding: template links are never validated against the schema ----------------------------


async def test_a_link_to_an_entity_type_the_schema_lacks_is_refused(
    lending: grpc.aio.Channel, stores: Path
) -> None:
    """Strict validation must cover links: a forbid linked to ``Employe::"x"`` (typo of
    Employee) can never match anyone, so the block the operator meant is not in force."""
    store = stores / "lending"
    principal = str(ALLOWED.principal).split("::")[1]
    before = await decide(lending, allowed_case())
    assert before.decision == pb.DECISION_ALLOW
    (store / "blocks.cedar").write_text(BLOCK_TEMPLATE)
    links = json.loads((store / "links.json").read_text())
    links.append(
        {
            "id": "block-1",
            "template": "block-person",
            "values": {"?principal": f"Employe::{principal}"},
        }
    )
    write_atomically(store / "links.json", json.dumps(links, indent=1))
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.FAILED
    assert state.policy_version == before.policy_version
    assert any(p.file == "lending/links.json" for p in state.problems)


# --- Finding: explain reports errors Cedar never raised, an oracle of hidden values ----------

GUARDED = (
    '@id("manager-fee")\n'
    "permit (principal, action, resource)\n"
    'when { principal.role == "manager" && resource.amount + context.fee < 100 };\n'
    '@id("manager-then-fee")\n'
    "permit (principal, action, resource)\n"
    'when { principal.role == "manager" } when { resource.amount + context.fee < 100 };\n'
)
HIDDEN_AMOUNT = 9_223_372_036_854_775_000  # near i64::MAX: "+ fee" overflows for fee >= 808


@pytest.fixture
async def fees(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A schema-less store: a clerk, a loan with an amount the clerk may not see, one permit
    whose first conjunct (is a manager) guards the second (reads the amount)."""
    store = tmp_path / "stores" / "fees"
    store.mkdir(parents=True)
    (store / "fees.cedar").write_text(GUARDED)
    (store / "store.toml").write_text('validation = "off"\n')
    entities = [
        {"uid": {"type": "User", "id": "clerk"}, "attrs": {"role": "clerk"}, "parents": []},
        {"uid": {"type": "Loan", "id": "l1"}, "attrs": {"amount": HIDDEN_AMOUNT}, "parents": []},
    ]
    (store / "entities.json").write_text(json.dumps(entities))
    async with verdict_app(stores=store.parent, default_store="fees", policy_watch=False) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            yield channel


async def explained(channel: grpc.aio.Channel, fee: int) -> tuple[int, list[tuple[str, str, int]]]:
    """The clerk's decision on the loan with ``fee`` in the context, and the permit's checks."""
    request = build_request('User::"clerk"', 'Action::"view"', 'Loan::"l1"', context={"fee": fee})
    request.explain = True
    reply = await decide(channel, request)
    (permit,) = [e for e in reply.explanations if e.policy_id == "manager-fee"]
    return reply.decision, [(c.kind, c.outcome, c.conjunct) for c in permit.conditions]


async def test_explain_reports_the_first_false_conjunct_not_a_later_error(
    fees: grpc.aio.Channel,
) -> None:
    """Cedar's ``&&`` stops at the first false operand; the explanation must say so, and must
    not depend on what a conjunct Cedar never evaluated would have done."""
    small_decision, small = await explained(fees, 0)
    big_decision, big = await explained(fees, 1_000)
    assert small_decision == big_decision == pb.DECISION_DENY
    assert small == [("when", "false", 1)]
    assert big == [("when", "false", 1)]


async def test_explain_skips_the_clauses_after_the_first_that_decided(
    fees: grpc.aio.Channel,
) -> None:
    """The same guard as two ``when`` clauses: Cedar stops at the first, so the second is
    reported "skipped" (never evaluated), whatever the fee makes it do alone."""
    for fee in (0, 1_000):
        request = build_request(
            'User::"clerk"', 'Action::"view"', 'Loan::"l1"', context={"fee": fee}
        )
        request.explain = True
        reply = await decide(fees, request)
        (permit,) = [e for e in reply.explanations if e.policy_id == "manager-then-fee"]
        checks = [(c.kind, c.outcome, c.conjunct) for c in permit.conditions]
        assert checks == [("when", "false", 1), ("when", "skipped", 0)], fee
        assert not permit.applies


# --- Handled: store folder tricks keep serving one consistent version -------------------------


async def test_symlinked_folders_in_a_store_are_not_followed(
    lending: grpc.aio.Channel, stores: Path, tmp_path: Path
) -> None:
    """A folder symlink back to the store (a loop) and one to a folder outside the stores
    folder holding a permit-all: neither is walked for ``*.cedar``, the reload neither hangs nor
    duplicates policies, and the outside permit-all is not served."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "open.cedar").write_text('@id("open")\npermit (principal, action, resource);\n')
    store = stores / "lending"
    before = await decide(lending, allowed_case())
    os.symlink("..", store / "loop")
    os.symlink(outside, store / "elsewhere")
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.UNCHANGED
    assert state.policy_version == before.policy_version
    denied = next(c for c in lending_cases() if c.expect == "deny")
    request = build_request(
        denied.principal, denied.action, denied.resource, context=denied.context
    )
    assert (await decide(lending, request)).decision == pb.DECISION_DENY


async def test_a_policy_file_swapped_for_a_device_or_binary_keeps_the_last_good_version(
    lending: grpc.aio.Channel, stores: Path
) -> None:
    """A ``*.cedar`` replaced by a link to /dev/zero (would read forever) or by binary bytes
    fails the reload at once with the file named; the last good version serves on."""
    store = stores / "lending"
    before = await decide(lending, allowed_case())
    staff = store / "staff.cedar"
    good = staff.read_text()
    staff.unlink()
    os.symlink("/dev/zero", staff)
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.FAILED
    assert state.policy_version == before.policy_version
    assert [(p.file, p.message) for p in state.problems] == [
        ("lending/staff.cedar", "a link to a file outside the store folder, refused")
    ]
    staff.unlink()
    staff.write_bytes(b"\xff\xfe\x00" + good.encode())
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.FAILED
    assert [p.file for p in state.problems] == ["lending/staff.cedar"]
    after = await decide(lending, allowed_case())
    assert (after.decision, after.policy_version) == (pb.DECISION_ALLOW, before.policy_version)


@pytest.mark.parametrize(
    ("name", "bound"),
    [("huge.cedar", MAX_POLICY_FILE_BYTES), ("entities.json", MAX_ENTITIES_FILE_BYTES)],
)
async def test_an_oversized_file_fails_the_reload_unread_and_the_last_good_version_serves(
    lending: grpc.aio.Channel, stores: Path, name: str, bound: int
) -> None:
    """A policy file or entities.json one byte past its bound (sparse) appears in the store:
    the reload fails at once naming the file and the bound, without reading it (the server's
    memory would otherwise take many times its size), and the last good version serves on."""
    before = await decide(lending, allowed_case())
    sparse(stores / "lending" / name, bound + 1)
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.FAILED
    assert [p.file for p in state.problems] == [f"lending/{name}"]
    assert "larger than the limit of" in state.problems[0].message
    after = await decide(lending, allowed_case())
    assert (after.decision, after.policy_version) == (pb.DECISION_ALLOW, before.policy_version)


async def test_a_new_policy_file_that_cannot_be_read_fails_the_reload(
    lending: grpc.aio.Channel, stores: Path
) -> None:
    """A FIFO named ``*.cedar`` added to a running store: the reload reports it (FAILED, the
    file named) instead of "unchanged". The version hash skipped files it could not read, so
    a new unusable file left the hash as it was and the reload never looked (a restart would
    refuse the same folder)."""
    before = await decide(lending, allowed_case())
    os.mkfifo(stores / "lending" / "new.cedar")
    state = (await reload(lending))["lending"]
    assert state.change == CHANGE.FAILED
    assert [(p.file, p.message) for p in state.problems] == [
        ("lending/new.cedar", "not a regular file")
    ]
    after = await decide(lending, allowed_case())
    assert (after.decision, after.policy_version) == (pb.DECISION_ALLOW, before.policy_version)


# --- Finding: a reload pairs the policies it parsed with entities read later ----------------

UMA = next(c for c in lending_cases() if str(c.principal) == 'Employee::"uma"')
BLOCK_UMA = '@id("block-uma")\nforbid (principal == Employee::"uma", action, resource);\n'


def with_uma_suspended(text: str, suspended: bool, indent: int = 1) -> str:
    """entities.json text with uma's suspended flag set (``indent`` changes only the bytes)."""
    entities = json.loads(text)
    for entity in entities:
        if entity["uid"] == {"type": "Employee", "id": "uma"}:
            entity["attrs"]["suspended"] = suspended
    return json.dumps(entities, indent=indent)


async def test_a_swap_landing_before_the_entities_read_is_not_served_half_applied(
    stores: Path,
) -> None:
    """The operator moves uma's block from data to policy in one ConfigMap-style swap (new
    forbid + suspended=false). The swap lands while a reload (caused by an earlier, harmless
    entities.json edit) is between parsing the policies and reading entities.json; the real
    read then runs. Both on-disk states deny uma; the server must never allow her."""
    store = stores / "lending"
    entities = store / "entities.json"
    original = entities.read_text()
    entities.write_text(with_uma_suspended(original, True))
    request = build_request(UMA.principal, UMA.action, UMA.resource, context=UMA.context)
    async with verdict_app(stores=stores, default_store="lending", policy_watch=False) as app:
        assert app.server is not None
        assert app.reloader is not None
        embedded = app.reloader.embedded
        assert embedded is not None
        real_read = embedded.read

        def read_after_the_swap(snapshot: StoreSnapshot) -> object:
            (store / "blocks.cedar").write_text(BLOCK_UMA)
            write_atomically(entities, with_uma_suspended(original, False))
            return real_read(snapshot)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            assert (await decide(channel, request)).decision == pb.DECISION_DENY
            # A harmless edit (same data, other bytes): the reload reads entities.json again.
            write_atomically(entities, with_uma_suspended(original, True, indent=2))
            embedded.read = read_after_the_swap  # type: ignore[method-assign,assignment]
            try:
                await reload(channel)
            finally:
                embedded.read = real_read  # type: ignore[method-assign]
            assert (await decide(channel, request)).decision == pb.DECISION_DENY
