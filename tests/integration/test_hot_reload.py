"""Hot reload of policy stores over a real server: file edits, broken edits, stores added and
removed, SIGHUP, the admin RPC, a ConfigMap-style symlink swap, and decisions under reload load."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.security.authn_support import token_sha256, verdict_app
from tests.stores import lending_copy
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.client import bearer, build_request
from verdict.policy.reloader import PeerReport, PolicyReloader

ALLOWED = next(c for c in lending_cases() if c.expect == "allow")
FREEZE = '@id("freeze")\nforbid (principal, action, resource);\n'
BROKEN = '@id("freeze")\nforbid (principal, action, resource)\n'  # no ';'
CHANGE = apb.PolicyStoreState.Change


def request(store: str = "") -> pb.IsAuthorizedRequest:
    """The allowed lending case, addressed to ``store``."""
    case = ALLOWED
    return build_request(
        case.principal, case.action, case.resource, context=case.context, store=store
    )


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a rename, as editors and `kubectl cp` do."""
    staged = path.parent / f".{path.name}.tmp"
    staged.write_text(text)
    os.replace(staged, path)


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """A stores folder holding a copy of the lending store."""
    return lending_copy(tmp_path)


@pytest.fixture
async def served(stores: Path) -> AsyncIterator[tuple[App, grpc.aio.Channel]]:
    """A running server over ``stores`` (fast debounce) and a channel to it."""
    async with verdict_app(
        stores=stores, default_store="lending", policy_reload_debounce_seconds=0.05
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            yield app, channel


async def decide(channel: grpc.aio.Channel, store: str = "") -> pb.IsAuthorizedResponse:
    """One IsAuthorized call."""
    reply: pb.IsAuthorizedResponse = await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
        request(store), timeout=5
    )
    return reply


async def reload(channel: grpc.aio.Channel) -> dict[str, apb.PolicyStoreState]:
    """Call AdminService/ReloadPolicies; each store's state by id."""
    reply = await apb_grpc.AdminServiceStub(channel).ReloadPolicies(apb.ReloadPoliciesRequest())
    return {s.policy_store_id: s for s in reply.stores}


async def until_version_changes(channel: grpc.aio.Channel, old: str) -> pb.IsAuthorizedResponse:
    """Decide until the answer reports a policy version other than ``old`` (at most 5 s)."""
    for _ in range(500):
        reply = await decide(channel)
        if reply.policy_version != old:
            return reply
        await asyncio.sleep(0.01)
    raise AssertionError("the edit was never picked up")


async def test_an_edit_is_picked_up_from_the_files(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """Adding a forbid-all policy file turns the ALLOW into a DENY by it, under a new version,
    without any call: the watcher saw the file."""
    _, channel = served
    before = await decide(channel)
    assert before.decision == pb.DECISION_ALLOW
    write_atomically(stores / "lending" / "freeze.cedar", FREEZE)
    after = await until_version_changes(channel, before.policy_version)
    assert after.decision == pb.DECISION_DENY
    assert list(after.determining_policies) == ["freeze"]


async def test_a_broken_edit_keeps_the_last_good_version_and_the_next_good_one_is_taken(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """A policy missing its ';' is refused with its file:line (logged, counted, in the RPC's
    answer); the old version keeps answering; fixing the file applies it."""
    _, channel = served
    good = await decide(channel)
    with capture_logs() as logs:
        write_atomically(stores / "lending" / "freeze.cedar", BROKEN)
        states = await reload(channel)
    lending = states["lending"]
    assert lending.change == CHANGE.FAILED
    assert lending.policy_version == good.policy_version
    assert any(p.file.endswith("freeze.cedar") and p.line >= 1 for p in lending.problems)
    failures = [e for e in logs if e["event"] == "policy_reload_failed"]
    assert failures
    assert "freeze.cedar:" in failures[0]["problems"][0]
    still = await decide(channel)
    assert (still.decision, still.policy_version) == (pb.DECISION_ALLOW, good.policy_version)
    write_atomically(stores / "lending" / "freeze.cedar", FREEZE)
    assert (await reload(channel))["lending"].change in (CHANGE.RELOADED, CHANGE.UNCHANGED)
    fixed = await decide(channel)
    assert fixed.decision == pb.DECISION_DENY
    assert fixed.policy_version != good.policy_version


async def test_stores_added_and_removed_on_disk(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """A store folder copied in is served (ADDED); removed, requests naming it are
    INVALID_ARGUMENT on policy_store_id; the other store is untouched."""
    app, channel = served
    shutil.copytree(stores / "lending", stores / "retail")
    states = await reload(channel)
    assert states["retail"].change in (CHANGE.ADDED, CHANGE.UNCHANGED)
    assert "retail" in app.policies.current.stores
    assert (await decide(channel, "retail")).decision == pb.DECISION_ALLOW
    shutil.rmtree(stores / "retail")
    await reload(channel)
    assert "retail" not in app.policies.current.stores
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await decide(channel, "retail")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("policy_store_id")
    assert (await decide(channel, "lending")).decision == pb.DECISION_ALLOW


async def test_sighup_reloads(served: tuple[App, grpc.aio.Channel], stores: Path) -> None:
    """SIGHUP makes the server read the files again (the watcher is off here)."""
    app, channel = served
    assert app.watch_task is not None
    app.watch_task.cancel()
    before = await decide(channel)
    write_atomically(stores / "lending" / "freeze.cedar", FREEZE)
    os.kill(os.getpid(), signal.SIGHUP)
    after = await until_version_changes(channel, before.policy_version)
    assert after.decision == pb.DECISION_DENY


async def test_list_policy_stores_reports_the_served_versions(
    served: tuple[App, grpc.aio.Channel],
) -> None:
    """ListPolicyStores names each store with the version decisions report."""
    _, channel = served
    reply = await apb_grpc.AdminServiceStub(channel).ListPolicyStores(apb.ListPolicyStoresRequest())
    decision = await decide(channel)
    assert reply.default_store == "lending"
    assert [(s.policy_store_id, s.policy_version) for s in reply.stores] == [
        ("lending", decision.policy_version)
    ]
    assert reply.stores[0].policies > 0


@pytest.fixture
def configmap(tmp_path: Path) -> Path:
    """A stores folder laid out as Kubernetes mounts a ConfigMap: ``lending`` -> ``..data/lending``,
    ``..data`` -> ``..v1`` (a timestamped folder)."""
    folder = tmp_path / "configmap"
    shutil.copytree(POLICIES / "lending", folder / "..v1" / "lending")
    os.symlink("..v1", folder / "..data")
    os.symlink("..data/lending", folder / "lending")
    return folder


def swap_configmap(folder: Path, name: str, extra: str | None) -> None:
    """Publish a new ConfigMap version as the kubelet does: a new folder, then ``..data``
    switched to it with one rename of a symlink."""
    shutil.copytree(POLICIES / "lending", folder / name / "lending")
    if extra is not None:
        (folder / name / "lending" / "freeze.cedar").write_text(extra)
    os.symlink(name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")


async def test_a_configmap_symlink_swap_is_picked_up(configmap: Path) -> None:
    """Switching ``..data`` to a version with the freeze policy is seen by the watcher."""
    async with verdict_app(
        stores=configmap, default_store="lending", policy_reload_debounce_seconds=0.05
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            before = await decide(channel)
            swap_configmap(configmap, "..v2", FREEZE)
            after = await until_version_changes(channel, before.policy_version)
            assert after.decision == pb.DECISION_DENY


async def test_decisions_during_fifty_reloads_are_each_consistent_with_one_version(
    configmap: Path,
) -> None:
    """Four callers decide without pause while the store changes 60 times (freeze on, freeze off,
    broken edits, ConfigMap swaps): no call fails, and every answer is the one its reported
    version gives (ALLOW without the freeze policy, DENY by it with)."""
    async with verdict_app(
        stores=configmap, default_store="lending", policy_reload_debounce_seconds=0.02
    ) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            plain = (await decide(channel)).policy_version
            expected = {plain: pb.DECISION_ALLOW}
            answers: list[pb.IsAuthorizedResponse] = []
            stop = asyncio.Event()

            async def keep_deciding() -> None:
                while not stop.is_set():
                    answers.append(await decide(channel))

            callers = asyncio.gather(*(keep_deciding() for _ in range(4)))
            lending = configmap / "lending"
            for step in range(60):
                if step % 15 == 7:
                    swap_configmap(configmap, f"..v{step + 2}", FREEZE if step % 2 else None)
                elif step % 5 == 4:
                    write_atomically(lending / "freeze.cedar", BROKEN)
                elif step % 2:
                    write_atomically(lending / "freeze.cedar", FREEZE)
                else:
                    (lending / "freeze.cedar").unlink(missing_ok=True)
                if step % 10 == 9:
                    await reload(channel)
                await asyncio.sleep(0.03)
            write_atomically(lending / "freeze.cedar", FREEZE)
            frozen = (await reload(channel))["lending"].policy_version
            expected[frozen] = pb.DECISION_DENY
            stop.set()
            await callers
    versions = {a.policy_version for a in answers}
    assert len(versions) == 2  # the two contents; broken edits never served
    assert versions == set(expected)
    assert all(a.decision == expected[a.policy_version] for a in answers)
    assert len(answers) > 100


async def test_the_admin_rpcs_need_the_admin_group(tmp_path: Path, stores: Path) -> None:
    """With a callers file, a decisions-only caller gets PERMISSION_DENIED on ReloadPolicies and
    ListPolicyStores; a caller granted `admin` gets answers."""
    callers = tmp_path / "callers.toml"
    callers.write_text(
        '[[callers]]\nid = "decider"\nmethods = ["decisions"]\nstores = ["*"]\n'
        f'token_sha256 = ["{token_sha256("decider-token")}"]\n'
        '[[callers]]\nid = "operator"\nmethods = ["admin"]\nstores = ["*"]\n'
        f'token_sha256 = ["{token_sha256("operator-token")}"]\n'
    )
    async with verdict_app(stores=stores, default_store="lending", callers_file=callers) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            admin = apb_grpc.AdminServiceStub(channel)
            for call in (admin.ReloadPolicies, admin.ListPolicyStores):
                empty = (
                    apb.ReloadPoliciesRequest()
                    if call is admin.ReloadPolicies
                    else (apb.ListPolicyStoresRequest())
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(empty, metadata=tuple(bearer("decider-token")))  # type: ignore[arg-type]
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                await call(empty, metadata=tuple(bearer("operator-token")))  # type: ignore[arg-type]


async def test_a_bad_link_keeps_the_last_good_version(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """A link to a missing template is refused at its links.json line; the old links serve on."""
    _, channel = served
    before = await decide(channel)
    write_atomically(
        stores / "lending" / "links.json",
        '[\n  {"id": "x", "template": "gone", "values": {}}\n]\n',
    )
    lending = (await reload(channel))["lending"]
    assert lending.change == CHANGE.FAILED
    assert lending.policy_version == before.policy_version
    assert [(p.file, p.line) for p in lending.problems] == [("lending/links.json", 2)]


def suspend_uma(entities_json: str, suspended: bool) -> str:
    """entities.json text with uma's suspended flag set."""
    entities = json.loads(entities_json)
    for entity in entities:
        if entity["uid"] == {"type": "Employee", "id": "uma"}:
            entity["attrs"]["suspended"] = suspended
    return json.dumps(entities, indent=1)


async def uma_views(channel: grpc.aio.Channel, min_version: int = 0) -> pb.IsAuthorizedResponse:
    """Uma asks to view loan-1001 (ALLOW unless she is suspended)."""
    case = next(c for c in lending_cases() if str(c.principal) == 'Employee::"uma"')
    stub = pb_grpc.AuthorizationServiceStub(channel)
    built = build_request(case.principal, case.action, case.resource, context=case.context)
    built.min_entity_version = min_version
    reply: pb.IsAuthorizedResponse = await stub.IsAuthorized(built, timeout=5)
    return reply


async def test_entities_json_reloads_whole_and_a_broken_one_is_refused(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """Editing entities.json (uma suspended) is picked up at a new entity version; a broken
    entities.json is FAILED at its line and the entities in use stay; the policy version does
    not change for an entities-only edit."""
    _, channel = served
    entities = stores / "lending" / "entities.json"
    text = entities.read_text()
    before = await uma_views(channel)
    assert before.decision == pb.DECISION_ALLOW
    write_atomically(entities, suspend_uma(text, True))
    assert (await reload(channel))["lending"].change in (CHANGE.RELOADED, CHANGE.UNCHANGED)
    after = await uma_views(channel)
    assert after.decision == pb.DECISION_DENY
    assert after.entity_version > before.entity_version
    assert after.policy_version == before.policy_version
    write_atomically(entities, text.replace('"uma"', '"uma"', 1)[:-40])
    lending = (await reload(channel))["lending"]
    assert lending.change == CHANGE.FAILED
    assert lending.problems[0].file == "lending/entities.json"
    assert (await uma_views(channel)).decision == pb.DECISION_DENY


async def test_api_writes_survive_a_policy_edit_but_not_an_entities_json_edit(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """An entity written through EntityService stays across a policy-only reload, and is
    replaced when entities.json itself changes (the file is the embedded store's source)."""
    _, channel = served
    entities_stub = epb_grpc.EntityServiceStub(channel)
    text = (stores / "lending" / "entities.json").read_text()
    uma = next(e for e in json.loads(text) if e["uid"] == {"type": "Employee", "id": "uma"})
    uma["attrs"]["suspended"] = True
    written = await entities_stub.PutEntities(
        epb.PutEntitiesRequest(entities_json=json.dumps([uma]))
    )
    assert (await uma_views(channel, written.version)).decision == pb.DECISION_DENY
    write_atomically(
        stores / "lending" / "note.cedar",
        '@id("note")\nforbid (principal, action, resource) when { false };\n',
    )
    assert (await reload(channel))["lending"].change == CHANGE.RELOADED
    assert (await uma_views(channel, written.version)).decision == pb.DECISION_DENY
    write_atomically(stores / "lending" / "entities.json", text + "\n")
    await reload(channel)
    assert (await uma_views(channel)).decision == pb.DECISION_ALLOW


class _ReloadedMeanwhile:
    """The other workers of `--workers N` as this worker's reloader sees them, at the moment
    a file-watch or SIGHUP reload of this worker lands while they reload: the store changes on
    disk, this worker reloads it (a real reload), and the others report serving what it
    serves then (they read the same files)."""

    def __init__(self, reloader: PolicyReloader, stores: Path) -> None:
        self._reloader, self._stores = reloader, stores

    async def reload_others(self, only: frozenset[str] | None, seconds: float) -> PeerReport:
        write_atomically(self._stores / "lending" / "freeze.cedar", FREEZE)
        await self._reloader.reload("sighup", only)
        return PeerReport(versions={1: self._reloader.served(only)})


async def test_reload_policies_names_the_version_served_when_it_answers(
    served: tuple[App, grpc.aio.Channel], stores: Path
) -> None:
    """With several workers, a reload of the asking worker that lands while the others reload
    is what that worker serves when ReloadPolicies answers: the answer names it (it named the
    version of the call's own reload, which no worker served any more; round 12)."""
    app, channel = served
    assert app.watch_task is not None
    app.watch_task.cancel()
    before = await decide(channel)
    (stores / "lending" / "extra.cedar").write_text(
        '@id("extra")\npermit (principal, action == Action::"view", resource) when { false };\n'
    )
    reloader = app.reloader
    assert reloader is not None
    reloader.peers = _ReloadedMeanwhile(reloader, stores)
    try:
        state = (await reload(channel))["lending"]
    finally:
        reloader.peers = None
    after = await decide(channel)
    assert after.decision == pb.DECISION_DENY  # the freeze landed during the call
    assert after.policy_version not in {before.policy_version, ""}
    assert state.change == CHANGE.RELOADED
    assert state.policy_version == after.policy_version
    listed = await apb_grpc.AdminServiceStub(channel).ListPolicyStores(
        apb.ListPolicyStoresRequest()
    )
    assert state.policies == listed.stores[0].policies
