"""Attacks on the edge steps wrapped around each handler at registration (transport/pipeline.py):
calls in shapes a method does not have, calls with no request at all, invented method names,
request id and metric abuse, explain hidden in a batch, admission slots after every way a call
can end; and caller uids: spelled as JSON arrays (the sequence form Cedar reads as a uid), and
long invented ones kept by the Redis key memo."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import shutil
import time
import tracemalloc
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from tests.cases import BASE_CONTEXT, lending_cases
from tests.conftest import POLICIES
from tests.integration.redis_apps import load_lending
from tests.redis_support import RedisProcess
from tests.security.authn_support import refusal_code, token_sha256, verdict_app, write_callers
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App, build_app, start, stop
from verdict.client import bearer, build_request
from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.model import EntityUid
from verdict.store.base import DEFAULT_READ, EntityReader, EntitySlice, ReadOptions
from verdict.store.redis_store import RedisEntityStore
from verdict.transport.callers import METHOD_GROUPS, OPEN_METHODS
from verdict.transport.pipeline import _WrappedLookup

ALLOWED = next(c for c in lending_cases() if c.expect == "allow")
REQUEST = build_request(
    ALLOWED.principal, ALLOWED.action, ALLOWED.resource, context=ALLOWED.context
)
IS_AUTHORIZED = "/verdict.v1.AuthorizationService/IsAuthorized"
PUT = "/verdict.v1.EntityService/PutEntities"
RELOAD = "/verdict.v1.AdminService/ReloadPolicies"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
CALLERS = (
    '[[callers]]\nid = "decider"\nmethods = ["decisions"]\nstores = ["lending"]\n'
    f'token_sha256 = ["{token_sha256("decider-token")}"]\n'
    '[[callers]]\nid = "admin"\nmethods = ["decisions", "explain", "entity-reads", '
    '"entity-writes", "admin"]\nstores = ["*"]\n'
    f'token_sha256 = ["{token_sha256("admin-token")}"]\n'
)
DECIDER = tuple(bearer("decider-token"))
ADMIN = tuple(bearer("admin-token"))
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """The lending store behind a callers file: a decider (lending only) and an admin."""
    async with verdict_app(callers_file=write_callers(tmp_path, CALLERS)) as served:
        yield served


def address(app: App) -> str:
    assert app.server is not None
    return f"127.0.0.1:{app.server.port}"


def in_store(store: str, explain: bool = False) -> pb.IsAuthorizedRequest:
    """REQUEST addressed to ``store``."""
    request = pb.IsAuthorizedRequest()
    request.CopyFrom(REQUEST)
    request.policy_store_id = store
    request.explain = explain
    return request


async def outcome(call: Any) -> tuple[grpc.StatusCode, Any]:
    """(status, reply or details) of an awaited call or an async iterator of replies."""
    try:
        if hasattr(call, "__aiter__"):
            return OK, [reply async for reply in call]
        return OK, await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


async def test_unary_methods_called_in_other_shapes_are_still_guarded(app: App) -> None:
    """A unary method called as a bidi stream or a server stream, with one or two requests,
    meets the same guard: an anonymous caller is refused; a granted caller's call is judged by
    the one request the method reads (the first), never checked on one and served another."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        raw = REQUEST.SerializeToString()
        for method in (IS_AUTHORIZED, PUT, RELOAD):
            bidi: Any = channel.stream_stream(method)
            server_stream: Any = channel.unary_stream(method)
            for messages in ([raw], [raw, raw]):
                shaped = outcome(bidi(iter(messages), timeout=5))
                assert await refusal_code(shaped, UNAUTHENTICATED) is UNAUTHENTICATED, method
            code, _ = await outcome(server_stream(raw, timeout=5))
            assert code is UNAUTHENTICATED, method
        reflection: Any = channel.unary_unary(REFLECTION)
        assert (await outcome(reflection(b"", timeout=5)))[0] is UNAUTHENTICATED

        stream: Any = channel.stream_stream(IS_AUTHORIZED)
        granted, other = in_store("lending").SerializeToString(), in_store("retail")
        code, replies = await outcome(
            stream(iter([granted, other.SerializeToString()]), metadata=DECIDER, timeout=5)
        )
        assert code is OK
        [reply] = [pb.IsAuthorizedResponse.FromString(r) for r in replies]
        assert reply.policy_store_id == "lending"
        refused = outcome(
            stream(iter([other.SerializeToString(), granted]), metadata=DECIDER, timeout=5)
        )
        assert await refusal_code(refused, DENIED) is DENIED


async def test_a_unary_call_without_its_request_holds_no_slot(tmp_path: Path) -> None:
    """A unary call whose caller half-closes without sending the request never reaches a
    wrapped step (grpc waits for the message): it ends at the caller's deadline, never OK,
    and takes no concurrency slot, so with max_concurrent_calls = 1 and three of them open a
    granted call is still answered."""
    callers = write_callers(tmp_path, CALLERS)
    async with (
        verdict_app(callers_file=callers, max_concurrent_calls=1) as served,
        grpc.aio.insecure_channel(address(served)) as channel,
    ):
        empty: Any = channel.stream_stream(IS_AUTHORIZED)
        started = time.monotonic()
        held = [
            asyncio.create_task(outcome(empty(iter([]), metadata=md, timeout=1.5)))
            for md in ((), DECIDER, ADMIN)
        ]
        await asyncio.sleep(0.3)
        stub = pb_grpc.AuthorizationServiceStub(channel)
        reply = await stub.IsAuthorized(REQUEST, metadata=DECIDER, timeout=5)
        assert reply.decision == pb.DECISION_ALLOW
        codes = [code for code, _ in await asyncio.gather(*held)]
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 3
        assert time.monotonic() - started < 5


def wrapped_names() -> set[str]:
    """Every method name any registration-time lookup of this process has remembered."""
    return {
        name
        for found in gc.get_objects()
        if isinstance(found, _WrappedLookup)
        for name in found._wrapped
    }


async def test_invented_method_names_are_neither_served_nor_remembered(app: App) -> None:
    """Case, slash, NUL-free odd and long spellings of real methods, and 600 invented names:
    each is UNIMPLEMENTED (or refused by grpc's header limit), and the wrappers remember only
    methods that exist."""
    served = set(METHOD_GROUPS) | OPEN_METHODS | {"/grpc.health.v1.Health/List"}
    odd = [
        IS_AUTHORIZED.upper(),
        IS_AUTHORIZED.lower(),
        IS_AUTHORIZED + "/",
        IS_AUTHORIZED.replace("/verdict", "//verdict"),
        IS_AUTHORIZED + "%00",
        "/verdict.v1.AuthorizationService/IsAuthorized;x",
        "/grpc.health.v1.Health/Check/..",
        "/grpc.health.v1.Health/check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/" + "A" * 6000,
        *(f"/verdict.v1.AuthorizationService/Invented{i}" for i in range(300)),
        *(f"/grpc.health.v1.Health/Invented{i}" for i in range(300)),
    ]
    async with grpc.aio.insecure_channel(address(app)) as channel:
        for method in odd:
            for metadata in ((), ADMIN):
                unary: Any = channel.unary_unary(method)
                code, _ = await outcome(unary(b"", metadata=metadata, timeout=5))
                assert code in (
                    grpc.StatusCode.UNIMPLEMENTED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,  # grpc's metadata size limit
                ), method
                if len(method) < 100:
                    assert code is grpc.StatusCode.UNIMPLEMENTED, method
    remembered = wrapped_names()
    assert remembered <= served
    assert len(remembered) <= len(served)


def trailing_request_id(metadata: Iterable[tuple[str, Any]] | None) -> list[str]:
    return [str(v) for k, v in metadata or () if k == "x-request-id"]


async def request_id_for(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, Any], ...], request: Any = REQUEST
) -> tuple[grpc.StatusCode, list[str]]:
    stub = pb_grpc.AuthorizationServiceStub(channel)
    call = stub.IsAuthorized(request, metadata=metadata, timeout=5)
    try:
        await call
        code = OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    return code, trailing_request_id(await call.trailing_metadata())


async def test_request_id_header_abuse(app: App) -> None:
    """The request id echoed back is the caller's only when it is 1-128 printable ASCII
    characters; otherwise a fresh one. Many copies: the first acceptable one (past grpc's
    header limit none is read: the call is refused). The binary
    header of the same name is never taken. Refused calls get an id too."""
    longest, too_long = "r" * 128, "r" * 129
    async with grpc.aio.insecure_channel(address(app)) as channel:
        cases: list[tuple[tuple[tuple[str, Any], ...], str | None]] = [
            ((("x-request-id", longest),), longest),
            ((("x-request-id", too_long),), None),
            ((("x-request-id", "a b\"{}'<>"),), "a b\"{}'<>"),
            ((("x-request-id", too_long), ("x-request-id", "second")), "second"),
            # 80 copies: ~4 KiB of metadata as HTTP/2 counts it (name + value + 32 bytes
            # each). 150 (~7.7 KiB) sat between grpc core's soft metadata limit and its hard
            # one, where core refuses a call at random (RESOURCE_EXHAUSTED): a flaky test.
            (tuple(("x-request-id", f"copy-{i}") for i in range(80)), "copy-0"),
            ((("x-request-id-bin", b"\x00\xff\n{json}"),), None),
        ]
        for extra, expected in cases:
            code, echoed = await request_id_for(channel, DECIDER + extra)
            assert code is OK
            assert len(echoed) == 1, extra[:2]
            if expected is None:
                assert HEX_ID.match(echoed[0]), echoed
            else:
                assert echoed == [expected]
        # Past grpc's 8 KiB header limit, core refuses the call before any step runs.
        flood = tuple(("x-request-id", f"copy-{i}") for i in range(400))
        assert (await request_id_for(channel, DECIDER + flood))[
            0
        ] is grpc.StatusCode.RESOURCE_EXHAUSTED
        code, echoed = await request_id_for(channel, (("x-request-id", "anon-1"),))
        assert (code, echoed) == (UNAUTHENTICATED, ["anon-1"])
        code, echoed = await request_id_for(
            channel, (*DECIDER, ("x-request-id", "denied-1")), in_store("retail")
        )
        assert (code, echoed) == (DENIED, ["denied-1"])
        # A request the servicer refuses (its status carries a BadRequest detail): before the
        # fix the detail replaced the trailing metadata, and the request id was lost.
        bad_uid = in_store("lending")
        bad_uid.principal.type = "not a type"
        stub = pb_grpc.AuthorizationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.IsAuthorized(
                bad_uid, metadata=(*ADMIN, ("x-request-id", "bad-1")), timeout=5
            )
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert trailing_request_id(info.value.trailing_metadata()) == ["bad-1"]
        status = rpc_status.from_call(info.value)
        assert status is not None
        [detail] = status.details
        violations = error_details_pb2.BadRequest()
        assert detail.Unpack(violations)
        assert violations.field_violations[0].field == "principal.type"


def label_values(metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in REGISTRY.collect()
        if family.name == metric
        for sample in family.samples
        if label in sample.labels
    }


async def test_metric_labels_never_take_caller_text(app: App) -> None:
    """After calls with invented methods, stores, request ids and tokens, the RPC and refusal
    metrics carry only served method names, status code names and fixed reasons."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        for i in range(50):
            unary: Any = channel.unary_unary(f"/verdict.v1.AuthorizationService/Made{i}")
            await outcome(unary(b"", metadata=ADMIN, timeout=5))
            await request_id_for(channel, (("authorization", f"Bearer junk-{i}"),))
            await request_id_for(
                channel, (*DECIDER, ("x-request-id", f"rid-{i}")), in_store(f"store-{i}")
            )
            await request_id_for(channel, ADMIN, in_store(f"made-up-{i}"))
    methods = {name.rpartition("/")[2] for name in (*METHOD_GROUPS, *OPEN_METHODS)}
    methods.add("List")
    assert "IsAuthorized" in label_values("verdict_rpc_duration_seconds", "method")
    assert label_values("verdict_rpc_duration_seconds", "method") <= methods
    codes = label_values("verdict_rpc_duration_seconds", "code")
    assert codes <= {code.name for code in grpc.StatusCode}
    reasons = label_values("verdict_auth_refusals", "reason")
    assert reasons <= {
        "no_identity",
        "malformed_authorization",
        "unknown_token",
        "expired_certificate",
        "certificate_not_yet_valid",
        "bad_jwt",
        "expired_jwt",
        "unknown_caller",
        "method_not_granted",
        "store_not_granted",
        "explain_not_granted",
    }
    assert {"unknown_token", "store_not_granted"} <= reasons


async def test_explain_hidden_deep_in_a_batch_is_refused(app: App) -> None:
    """A caller without the explain group: a batch of 40 plain items with explain set on the
    last one only is refused as a whole; the same batch without it is answered; the admin
    (granted explain) gets explanations for that item."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        items = [in_store("lending") for _ in range(39)]
        sneaky = pb.BatchAuthorizeRequest(requests=[*items, in_store("", explain=True)])
        code, _ = await outcome(stub.BatchAuthorize(sneaky, metadata=DECIDER, timeout=10))
        assert code is DENIED
        plain = pb.BatchAuthorizeRequest(requests=[*items, in_store("")])
        code, reply = await outcome(stub.BatchAuthorize(plain, metadata=DECIDER, timeout=10))
        assert code is OK
        assert len(reply.results) == 40
        assert not any(r.response.explanations for r in reply.results)
        code, reply = await outcome(stub.BatchAuthorize(sneaky, metadata=ADMIN, timeout=10))
        assert code is OK
        assert reply.results[-1].response.explanations


class GatedStore:
    """The app's real in-memory store; reads wait for ``gate``, and raise (with loan data in
    the message) while ``fail`` is set."""

    def __init__(self, inner: EntityReader) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.fail = False
        self.waiting = 0

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        if self.fail:
            raise RuntimeError("loan-1001 of alice: amount 15000")
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await self.inner.fetch_slice(store_id, roots, options)


@asynccontextmanager
async def gated_app(tmp_path: Path, limit: int) -> AsyncIterator[tuple[App, GatedStore]]:
    """The real app (callers file, max_concurrent_calls ``limit``) over a GatedStore."""
    settings = Settings(
        stores=POLICIES,
        default_store="lending",
        listen="127.0.0.1:0",
        callers_file=write_callers(tmp_path, CALLERS),
        max_concurrent_calls=limit,
    )
    app = build_app(settings)
    store = GatedStore(app.entities)
    app.authorizer = Authorizer(app.policies, store)
    await start(app)
    try:
        yield app, store
    finally:
        store.gate.set()
        await stop(app, 0)


async def until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_admission_slots_come_back_after_every_way_a_call_ends(tmp_path: Path) -> None:
    """max_concurrent_calls = 2. Calls the caller cancels mid-read, calls whose deadline passes
    mid-read, calls the guard refuses, bad requests and a store that raises: afterwards exactly
    two calls are admitted again and a third is RESOURCE_EXHAUSTED (the count never leaked
    either way). At the limit an anonymous or ungranted call is refused for what it is, not
    for load; the store's exception text never reaches the caller."""
    async with (
        gated_app(tmp_path, limit=2) as (app, store),
        grpc.aio.insecure_channel(address(app)) as channel,
    ):
        stub = pb_grpc.AuthorizationServiceStub(channel)
        for _ in range(6):
            call = stub.IsAuthorized(REQUEST, metadata=DECIDER, timeout=10)
            await until(lambda: store.waiting == 1)
            call.cancel()
            await until(lambda: store.waiting == 0)
        late = [stub.IsAuthorized(REQUEST, metadata=DECIDER, timeout=0.3) for _ in range(2)]
        for late_call in late:
            assert (await outcome(late_call))[0] is grpc.StatusCode.DEADLINE_EXCEEDED
        await until(lambda: store.waiting == 0)
        bad_uid = in_store("lending")
        bad_uid.principal.type = "not a type"
        refused = [
            (REQUEST, (), UNAUTHENTICATED),
            (in_store("retail"), DECIDER, DENIED),
            (in_store("lending", explain=True), DECIDER, DENIED),
            (bad_uid, DECIDER, grpc.StatusCode.INVALID_ARGUMENT),
        ]
        for request, metadata, expected in refused * 5:
            call = stub.IsAuthorized(request, metadata=metadata, timeout=5)
            assert (await outcome(call))[0] is expected
        store.fail = True
        for _ in range(5):
            code, details = await outcome(stub.IsAuthorized(REQUEST, metadata=ADMIN, timeout=5))
            assert (code, details) == (grpc.StatusCode.INTERNAL, "internal error")
        store.fail = False

        for _ in range(2):
            held = [
                asyncio.create_task(
                    outcome(stub.IsAuthorized(REQUEST, metadata=DECIDER, timeout=10))
                )
                for _ in range(2)
            ]
            await until(lambda: store.waiting == 2)
            code, details = await outcome(stub.IsAuthorized(REQUEST, metadata=DECIDER, timeout=5))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details.startswith("max_concurrent_calls: ")
            for request, metadata, expected in refused[:3]:
                call = stub.IsAuthorized(request, metadata=metadata, timeout=5)
                assert (await outcome(call))[0] is expected
            health = health_pb2_grpc.HealthStub(channel)
            served = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert served.status == health_pb2.HealthCheckResponse.SERVING
            store.gate.set()
            answers = await asyncio.gather(*held)
            assert [code for code, _ in answers] == [OK, OK]
            store.gate.clear()


# A guardrail written the usual way for an attribute that may be absent. Cedar reads
# ``resource.owner`` as Borrower::"dave" however it is spelled; if Verdict does not see the
# reference, dave is not loaded, ``has`` is false and the forbid silently does not apply.
OWNER_FORBID = """@id("forbid-loans-of-suspended-owners")
forbid (principal, action, resource is Loan)
when { resource.owner has suspended && resource.owner.suspended };
"""
SUSPENDED_DAVE = {"__entity": {"type": "Borrower", "id": "dave"}}
OWNER_SPELLINGS = {
    "escape": SUSPENDED_DAVE,
    "record": {"type": "Borrower", "id": "dave"},
    # serde's sequence form of {"type", "id"}: with a schema Cedar reads it as the uid.
    "array": ["Borrower", "dave"],
}


def owner_forbid_stores(tmp_path: Path) -> Path:
    stores = tmp_path / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    (stores / "lending" / "owners.cedar").write_text(OWNER_FORBID)
    return stores


def new_loan(loan_id: str, owner: Any) -> dict[str, Any]:
    """A draft Loan of uma's partner owned by ``owner`` (dave is suspended)."""
    partner = {"__entity": {"type": "Partner", "id": "first-river-bank"}}
    attrs = {"kind": "personal", "amount": 1, "status": "draft", "owner": owner}
    return {
        "uid": {"type": "Loan", "id": loan_id},
        "attrs": {**attrs, "partner": partner},
        "parents": [],
    }


def uma_views(loan_id: str, entities: list[dict[str, Any]] | None = None, version: int = 0) -> Any:
    return pb.IsAuthorizedRequest(
        principal=pb.EntityUid(type="Employee", id="uma"),
        action=pb.EntityUid(type="Action", id="view"),
        resource=pb.EntityUid(type="Loan", id=loan_id),
        context_json=json.dumps(BASE_CONTEXT),
        entities_json=json.dumps(entities) if entities else "",
        min_entity_version=version,
    )


async def assert_owner_forbid_holds(app: App, stored: bool) -> None:
    """For each spelling of the suspended owner, in a request entity (and, if ``stored``,
    written with PutEntities first): the forbid decides, never staff-view-partner-loans."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        writes = epb_grpc.EntityServiceStub(channel)
        for name, owner in OWNER_SPELLINGS.items():
            inline = f"loan-inline-{name}"
            reply = await stub.IsAuthorized(
                uma_views(inline, [new_loan(inline, owner)]), timeout=10
            )
            assert reply.decision == pb.DECISION_DENY, name
            assert list(reply.determining_policies) == ["forbid-loans-of-suspended-owners"]
            if not stored:
                continue
            loan_id = f"loan-stored-{name}"
            put = epb.PutEntitiesRequest(entities_json=json.dumps([new_loan(loan_id, owner)]))
            written = await writes.PutEntities(put, timeout=10)
            reply = await stub.IsAuthorized(uma_views(loan_id, version=written.version), timeout=10)
            assert reply.decision == pb.DECISION_DENY, name
            assert list(reply.determining_policies) == ["forbid-loans-of-suspended-owners"]


async def test_an_array_spelled_reference_is_loaded_from_request_entities(tmp_path: Path) -> None:
    """Before the fix, ``"owner": ["Borrower", "dave"]`` in a request entity was ALLOW by
    staff-view-partner-loans: Cedar read it as dave, Verdict did not load dave."""
    async with verdict_app(stores=owner_forbid_stores(tmp_path)) as app:
        await assert_owner_forbid_holds(app, stored=False)


async def test_an_array_spelled_reference_is_loaded_from_stored_entities(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """On Redis, a Loan written with ``"owner": ["Borrower", "dave"]`` kept no reference to
    dave, so decisions on it never loaded dave and the forbid turned false (ALLOW)."""
    settings = Settings(
        stores=owner_forbid_stores(tmp_path),
        default_store="lending",
        redis_url=redis.url,
        listen="127.0.0.1:0",
    )
    app = build_app(settings)
    await app.entities.prepare()
    await load_lending(app)
    await start(app)
    try:
        await assert_owner_forbid_holds(app, stored=True)
    finally:
        await stop(app, 0)


@asynccontextmanager
async def owner_forbid_on_redis(tmp_path: Path, url: str) -> AsyncIterator[App]:
    """The lending store plus OWNER_FORBID on Redis at ``url``, loaded and serving."""
    settings = Settings(
        stores=owner_forbid_stores(tmp_path), default_store="lending", redis_url=url,
        listen="127.0.0.1:0",
    )  # fmt: skip
    app = build_app(settings)
    await app.entities.prepare()
    await load_lending(app)
    await start(app)
    try:
        yield app
    finally:
        await stop(app, 0)


OLD_LOAN_KEY = '["Loan","loan-old"]'


async def write_with_an_older_reference_list(app: App, redis: RedisProcess) -> str:
    """PutEntities a Loan owned by ``["Borrower", "dave"]``, then take dave out of its stored
    reference list, as Verdict wrote it before array-spelled references counted. Returns the
    refs hash's key."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        put = epb.PutEntitiesRequest(
            entities_json=json.dumps([new_loan("loan-old", ["Borrower", "dave"])])
        )
        await epb_grpc.EntityServiceStub(channel).PutEntities(put, timeout=10)
    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        (refs_key,) = await client.keys("*{lending}:refs")
        listed = await client.hget(refs_key, OLD_LOAN_KEY)
        assert isinstance(listed, str)
        assert '["Borrower","dave"]' in listed
        older = "\n".join(r for r in listed.split("\n") if "dave" not in r)
        await client.hset(refs_key, OLD_LOAN_KEY, older)
        return str(refs_key)
    finally:
        await client.aclose()


async def stored_list(redis: RedisProcess, refs_key: str) -> str:
    """The reference list stored for loan-old."""
    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        listed = await client.hget(refs_key, OLD_LOAN_KEY)
    finally:
        await client.aclose()
    assert isinstance(listed, str)
    return listed


async def test_a_reference_list_written_before_array_references_counted_is_repaired(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A Loan with ``"owner": ["Borrower", "dave"]`` whose stored reference list lacks dave:
    the slice script never reached dave, and the forbid on a suspended owner was false (ALLOW).
    The read now sees the list is stale, adds dave to it and reads again: DENY by the forbid."""
    async with owner_forbid_on_redis(tmp_path, redis.url) as app:
        refs_key = await write_with_an_older_reference_list(app, redis)
        async with grpc.aio.insecure_channel(address(app)) as channel:
            reply = await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                uma_views("loan-old"), timeout=10
            )
        assert reply.decision == pb.DECISION_DENY
        assert list(reply.determining_policies) == ["forbid-loans-of-suspended-owners"]
    assert '["Borrower","dave"]' in (await stored_list(redis, refs_key)).split("\n")


async def test_a_stale_reference_list_that_cannot_be_repaired_fails_closed(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A server whose Redis user may not write (HSET denied, so no repair) meets the stale
    list: the decision fails (INTERNAL), never ALLOW."""
    async with owner_forbid_on_redis(tmp_path, redis.url) as writer:
        await write_with_an_older_reference_list(writer, redis)
    redis.cli("ACL", "SETUSER", "reader", "on", ">s3cret", "~*", "&*", "+@all", "-hset")
    try:
        reader_url = f"redis://reader:s3cret@127.0.0.1:{redis.port}/0"
        settings = Settings(
            stores=owner_forbid_stores(tmp_path / "reader"), default_store="lending",
            redis_url=reader_url, listen="127.0.0.1:0",
        )  # fmt: skip
        app = build_app(settings)
        await app.entities.prepare()
        await start(app)
        try:
            async with grpc.aio.insecure_channel(address(app)) as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.IsAuthorized(uma_views("loan-old"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INTERNAL
            assert "s3cret" not in (refused.value.details() or "")
        finally:
            await stop(app, 0)
    finally:
        redis.cli("ACL", "DELUSER", "reader")


async def test_the_repair_leaves_a_list_alone_once_its_entity_changed(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """REPAIR_REFS adds references only while the entity is still the value they were
    computed from: a write since then brought its own list, which stays as written."""
    async with owner_forbid_on_redis(tmp_path, redis.url) as app:
        refs_key = await write_with_an_older_reference_list(app, redis)
        store = app.entities
        assert isinstance(store, RedisEntityStore)
        keys = store._keys("lending")
        triple = [OLD_LOAN_KEY, '{"v":1,"e":{"not":"what is stored"}}', '["Borrower","dave"]']
        assert await store._repair(keys=keys.all, args=triple) == 0
        assert "dave" not in await stored_list(redis, refs_key)


def retained_by(snapshot: tracemalloc.Snapshot, pattern: str) -> int:
    """Bytes still allocated by code with a frame in files matching ``pattern``."""
    kept = snapshot.filter_traces([tracemalloc.Filter(True, pattern, all_frames=True)])
    return sum(stat.size for stat in kept.statistics("filename"))


async def test_long_invented_uids_are_not_kept_by_the_key_memo(redis: RedisProcess) -> None:
    """A decisions caller names 190 long invented uids (1 KB type and id) in each request's
    context; the requests are refused, but the store read comes first. Before the fix each
    uid's Redis key stayed memoised (65,536 of them: about 330 MB per process, RSS measured);
    now only short uids are, and the Redis key code keeps almost nothing."""
    settings = Settings(
        stores=POLICIES,
        default_store="lending",
        redis_url=redis.url,
        listen="127.0.0.1:0",
        cache_max_missing=4,  # the known-missing cache (bounded by design) keeps next to none
    )
    app = build_app(settings)
    await app.entities.prepare()
    await load_lending(app)
    await start(app)
    tracemalloc.start(12)
    try:
        async with grpc.aio.insecure_channel(address(app)) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            before = retained_by(tracemalloc.take_snapshot(), "*/redis_keys.py")
            for request in range(30):
                refs = {
                    f"k{i}": {
                        "__entity": {"type": "T" * 1000, "id": f"{request}-{i}-" + "y" * 1000}
                    }
                    for i in range(190)
                }
                call = stub.IsAuthorized(
                    build_request(
                        ALLOWED.principal,
                        ALLOWED.action,
                        ALLOWED.resource,
                        context={**ALLOWED.context, **refs},
                    ),
                    timeout=30,
                )
                assert (await outcome(call))[0] is grpc.StatusCode.INVALID_ARGUMENT
            gc.collect()
            kept = retained_by(tracemalloc.take_snapshot(), "*/redis_keys.py") - before
    finally:
        tracemalloc.stop()
        await stop(app, 0)
    # 5,700 long uids: about 12 MB of keys if memoised.
    assert kept < 1_000_000
