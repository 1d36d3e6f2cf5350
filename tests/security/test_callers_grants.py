"""Per-caller authorization over a real server: method groups, stores, tokens, JWTs, refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.security.authn_support import (
    Issuer,
    jwt_table,
    refusal_code,
    token_sha256,
    verdict_app,
    write_callers,
)
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.client import bearer, build_request
from verdict.errors import ConfigError

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
CASE = lending_cases()[0]
TOKENS = {
    name: f"{name}-secret-token" for name in ("decider", "explainer", "reader", "writer", "admin")
}
ENTITY = json.dumps(
    [
        {
            "uid": {"type": "Partner", "id": "new-bank"},
            "attrs": {"name": "N", "kind": "bank", "active": True},
            "parents": [],
        }
    ]
)


def callers_text(issuer: Issuer) -> str:
    """A callers file with one token caller per method group, and a JWT subject."""
    entries = {
        "decider": ('["decisions"]', '["lending"]'),
        "explainer": ('["decisions", "explain"]', '["lending"]'),
        "reader": ('["entity-reads"]', '["*"]'),
        "writer": ('["entity-writes", "entity-reads"]', '["lending"]'),
        "admin": ('["admin"]', '["*"]'),
    }
    text = jwt_table(issuer)
    for name, (methods, stores) in entries.items():
        text += (
            f'\n[[callers]]\nid = "{name}"\nmethods = {methods}\nstores = {stores}\n'
            f'token_sha256 = ["{token_sha256(TOKENS[name])}"]\n'
        )
    return text + '\n[[callers]]\nid = "jwt-svc"\nmethods = ["decisions"]\nstores = ["*"]\n'


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """Two stores (lending, retail) served in plaintext with the callers file."""
    stores = tmp_path / "stores"
    for name in ("lending", "retail"):
        shutil.copytree(POLICIES / "lending", stores / name)
    issuer = Issuer(tmp_path)
    callers = write_callers(tmp_path, callers_text(issuer))
    async with verdict_app(stores=stores, callers_file=callers) as running:
        running.issuer = issuer  # type: ignore[attr-defined]
        yield running


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """A plaintext channel to ``app``."""
    assert app.server is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as ch:
        yield ch


def decision(store: str = "") -> pb.IsAuthorizedRequest:
    """The first shared case, addressed to ``store``."""
    return build_request(
        CASE.principal, CASE.action, CASE.resource, context=CASE.context, store=store
    )


async def status_of(call: object) -> grpc.StatusCode:
    """The status code a call ends with (OK when it succeeds)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def auth(name: str) -> tuple[tuple[str, str], ...]:
    """Metadata authenticating as the token caller ``name``."""
    return tuple(bearer(TOKENS[name]))


async def test_decisions_group(channel: grpc.aio.Channel) -> None:
    """A decisions grant allows IsAuthorized and BatchAuthorize and nothing of EntityService."""
    decide = (
        pb.AuthorizationServiceStub(channel) if hasattr(pb, "AuthorizationServiceStub") else None
    )
    del decide
    stub, entities = pb_grpc.AuthorizationServiceStub(channel), epb_grpc.EntityServiceStub(channel)
    md = auth("decider")
    assert await status_of(stub.IsAuthorized(decision(), metadata=md)) is grpc.StatusCode.OK
    batch = pb.BatchAuthorizeRequest(requests=[decision("lending")])
    assert await status_of(stub.BatchAuthorize(batch, metadata=md)) is grpc.StatusCode.OK
    get = epb.GetEntitiesRequest(policy_store_id="lending")
    put = epb.PutEntitiesRequest(policy_store_id="lending", entities_json=ENTITY)
    assert await status_of(entities.GetEntities(get, metadata=md)) is DENIED
    assert await status_of(entities.PutEntities(put, metadata=md)) is DENIED


async def test_explanations_need_their_own_grant(channel: grpc.aio.Channel) -> None:
    """A decisions grant alone may not ask for an explanation (several times a decision's cost,
    and it shows which conditions held), neither in one call nor in any batch item; a caller
    granted explain gets one."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    explained = decision()
    explained.explain = True
    assert await status_of(stub.IsAuthorized(explained, metadata=auth("decider"))) is DENIED
    batch = pb.BatchAuthorizeRequest(requests=[decision(), explained])
    assert await status_of(stub.BatchAuthorize(batch, metadata=auth("decider"))) is DENIED
    reply = await stub.IsAuthorized(explained, metadata=auth("explainer"))
    assert reply.decision == pb.DECISION_ALLOW
    assert len(reply.explanations) > 0
    replies = await stub.BatchAuthorize(batch, metadata=auth("explainer"))
    assert [len(r.response.explanations) > 0 for r in replies.results] == [False, True]


async def test_entity_groups(channel: grpc.aio.Channel) -> None:
    """entity-reads allows GetEntities only; entity-writes is needed for Put and Delete."""
    entities = epb_grpc.EntityServiceStub(channel)
    get = epb.GetEntitiesRequest(policy_store_id="lending")
    put = epb.PutEntitiesRequest(policy_store_id="lending", entities_json=ENTITY)
    delete = epb.DeleteEntitiesRequest(
        policy_store_id="lending", uids=[pb.EntityUid(type="Partner", id="new-bank")]
    )
    assert await status_of(entities.GetEntities(get, metadata=auth("reader"))) is grpc.StatusCode.OK
    assert await status_of(entities.PutEntities(put, metadata=auth("reader"))) is DENIED
    assert await status_of(entities.DeleteEntities(delete, metadata=auth("reader"))) is DENIED
    assert await status_of(entities.PutEntities(put, metadata=auth("writer"))) is grpc.StatusCode.OK
    ok = grpc.StatusCode.OK
    assert await status_of(entities.DeleteEntities(delete, metadata=auth("writer"))) is ok


async def test_admin_group_guards_reflection(channel: grpc.aio.Channel) -> None:
    """Server reflection (the admin group) is refused to a decisions caller, served to admin."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")

    async def first(md: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, object]:
        call = stub.ServerReflectionInfo(iter([ask]), metadata=md)
        try:
            async for _ in call:
                return grpc.StatusCode.OK, None
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, None

    assert await refusal_code(first(auth("decider")), DENIED) is DENIED
    assert (await first(auth("admin")))[0] is grpc.StatusCode.OK


async def test_stores_are_checked_after_parsing(channel: grpc.aio.Channel) -> None:
    """A caller granted lending is refused retail, in a single call or in any batch item."""
    stub, entities = pb_grpc.AuthorizationServiceStub(channel), epb_grpc.EntityServiceStub(channel)
    md = auth("decider")
    assert await status_of(stub.IsAuthorized(decision("retail"), metadata=md)) is DENIED
    mixed = pb.BatchAuthorizeRequest(requests=[decision("lending"), decision("retail")])
    assert await status_of(stub.BatchAuthorize(mixed, metadata=md)) is DENIED
    assert await status_of(stub.IsAuthorized(decision("no-such"), metadata=md)) is DENIED
    put = epb.PutEntitiesRequest(policy_store_id="retail", entities_json=ENTITY)
    assert await status_of(entities.PutEntities(put, metadata=auth("writer"))) is DENIED
    get = epb.GetEntitiesRequest(policy_store_id="retail")
    assert await status_of(entities.GetEntities(get, metadata=auth("reader"))) is grpc.StatusCode.OK


async def test_refusals_name_no_rule_and_no_caller(channel: grpc.aio.Channel) -> None:
    """UNAUTHENTICATED and PERMISSION_DENIED carry fixed texts and nothing about the grants."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await stub.IsAuthorized(decision())
    assert (none.value.code(), none.value.details()) == (UNAUTHENTICATED, "unauthenticated")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.IsAuthorized(decision("retail"), metadata=auth("decider"))
    assert (denied.value.code(), denied.value.details()) == (DENIED, "permission denied")


async def test_unknown_and_malformed_tokens_are_unauthenticated(channel: grpc.aio.Channel) -> None:
    """A token that matches no hash, or another auth scheme, is UNAUTHENTICATED."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    for md in (bearer("guess"), (("authorization", "Basic ZGVjaWRlcjp4"),)):
        assert await status_of(stub.IsAuthorized(decision(), metadata=md)) is UNAUTHENTICATED


async def test_jwt_over_the_wire(app: App, channel: grpc.aio.Channel) -> None:
    """A valid JWT is served; expired, wrong audience/issuer, alg none and HS256 are not."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    issuer: Issuer = app.issuer  # type: ignore[attr-defined]
    good = issuer.token("jwt-svc")
    assert (
        await status_of(stub.IsAuthorized(decision(), metadata=bearer(good))) is grpc.StatusCode.OK
    )
    bad = [
        issuer.token("jwt-svc", exp=1_000_000),
        issuer.token("jwt-svc", aud="someone-else"),
        issuer.token("jwt-svc", iss="https://evil.test"),
        issuer.forged("jwt-svc", "none"),
        issuer.forged("jwt-svc", "HS256"),
    ]
    for token in bad:
        assert (
            await status_of(stub.IsAuthorized(decision(), metadata=bearer(token)))
            is UNAUTHENTICATED
        )


def refusals(reason: str) -> float:
    """The refusal counter for ``reason``."""
    return REGISTRY.get_sample_value("verdict_auth_refusals_total", {"reason": reason}) or 0.0


async def test_refusals_are_counted_and_logged_without_the_token(channel: grpc.aio.Channel) -> None:
    """Each refusal adds to its reason's counter and is logged with the caller, never the token."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    before = {r: refusals(r) for r in ("no_identity", "unknown_token", "store_not_granted")}
    with capture_logs() as logs:
        await status_of(stub.IsAuthorized(decision()))
        await status_of(stub.IsAuthorized(decision(), metadata=bearer("guess-token")))
        await status_of(stub.IsAuthorized(decision("retail"), metadata=auth("decider")))
    for reason, count in before.items():
        assert refusals(reason) == count + 1, reason
    refused = [e for e in logs if e["event"] == "call_refused"]
    assert [e["reason"] for e in refused] == ["no_identity", "unknown_token", "store_not_granted"]
    assert refused[2]["caller"] == "decider"
    assert "guess-token" not in repr(logs)
    assert TOKENS["decider"] not in repr(logs)


async def test_a_flood_of_refusals_is_counted_whole_but_logged_in_part(
    channel: grpc.aio.Channel,
) -> None:
    """200 calls without an identity: the counter grows by 200, the log holds at most the
    budget's 20 lines of them per second (log shipping and disks are not the attacker's)."""
    stub = pb_grpc.AuthorizationServiceStub(channel)
    before = refusals("no_identity")
    with capture_logs() as logs:
        for _ in range(200):
            assert await status_of(stub.IsAuthorized(decision())) is UNAUTHENTICATED
    assert refusals("no_identity") == before + 200
    refused = [e for e in logs if e["event"] == "call_refused"]
    assert 20 <= len(refused) < 200
    held = sum(e["count"] for e in logs if e["event"] == "log_lines_held_back")
    assert len(refused) + held <= 200


async def test_health_needs_no_identity(channel: grpc.aio.Channel) -> None:
    """Health checks are answered without an identity, even with a callers file."""
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_without_callers_file_or_tls_everything_is_served_with_a_warning() -> None:
    """No callers file and no TLS: writes are served (make run) and a warning is logged once."""
    with capture_logs() as logs:
        async with verdict_app() as running:
            assert running.server is not None
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as ch:
                put = epb.PutEntitiesRequest(policy_store_id="lending", entities_json=ENTITY)
                await epb_grpc.EntityServiceStub(ch).PutEntities(put)
                await epb_grpc.EntityServiceStub(ch).PutEntities(put)
    warnings = [e for e in logs if e["event"] == "authorization_disabled"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


async def test_bad_callers_file_stops_the_start(tmp_path: Path) -> None:
    """A callers file with an error is fatal at start, naming file and line."""
    path = write_callers(tmp_path, '[[callers]]\nid = "a"\nmethods = ["root"]\nstores = ["*"]\n')
    with pytest.raises(ConfigError, match=r"callers\.toml:3: unknown group 'root'"):
        async with verdict_app(callers_file=path):
            pass


def test_tls_without_callers_file_is_refused(tmp_path: Path) -> None:
    """TLS without a callers file is a settings error: nobody would be granted anything."""
    from pydantic import ValidationError

    from verdict.config import Settings

    with pytest.raises(ValidationError, match="callers_file"):
        Settings(tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
