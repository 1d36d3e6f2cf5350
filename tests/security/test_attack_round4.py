"""Attack round 4 on a running server and on the CLI commands that talk to one: BatchAuthorize's
per-selection grouping over the memory store's parsed handles against IsAuthorized one by one
(both error modes, template links, erroring forbids, explain, request entities, duplicates,
min_entity_version), health names to a caller granted nothing, and a hostile server answering
`verdict healthcheck`, `verdict entities get`, `verdict check --server` and `verdict test
--server` with malformed replies."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.security.authn_support import token_sha256, write_callers
from tests.security.input_server import OK, ask, outcome, serve_stores
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.client import bearer

# --- 1. BatchAuthorize grouped by policy selection against IsAuthorized ------------------------

SCHEMA = """
entity Group;
entity User in [Group] { blocked: Bool };
entity Folder;
entity Doc in [Folder] { public: Bool };
action read, write appliesTo {
  principal: User, resource: Doc, context: { who?: User, n?: Long }
};
"""
POLICIES = """
@id("p-public")
permit (principal, action == Action::"read", resource) when { resource.public };
@id("p-group")
permit (principal in Group::"g", action, resource);
@id("f-blocked")
forbid (principal, action, resource) when { context has who && context.who.blocked };
@id("f-overflow")
forbid (principal, action == Action::"write", resource) when { context has n && context.n + 1 > 0 };
@id("p-overflow")
permit (principal, action == Action::"read", resource in Folder::"f")
  when { context has n && context.n * 2 > 0 };
@id("t-share")
permit (principal == ?principal, action, resource == ?resource);
"""
LINKS = [
    {
        "id": "share-bob-d2",
        "template": "t-share",
        "values": {"?principal": 'User::"bob"', "?resource": 'Doc::"d2"'},
    }
]
ENTITIES = [
    entity("Group", "g"),
    entity("Folder", "f"),
    entity("User", "alice", {"blocked": False}, [("Group", "g")]),
    entity("User", "bob", {"blocked": True}),
    entity("User", "carol", {"blocked": False}),
    entity("Doc", "d1", {"public": True}),
    entity("Doc", "d2", {"public": False}),
    entity("Doc", "d3", {"public": False}, [("Folder", "f")]),
]
BIG = 9_223_372_036_854_775_807
CONTEXTS: list[dict[str, Any]] = [
    {},
    {"who": {"__entity": {"type": "User", "id": "alice"}}},
    {"who": {"__entity": {"type": "User", "id": "bob"}}},
    {"who": {"__entity": {"type": "User", "id": "ghost"}}},  # the forbid errors
    {"n": BIG},  # f-overflow and p-overflow error
    {"n": 1},
    {"n": BIG, "who": {"__entity": {"type": "User", "id": "ghost"}}},
]
NEW_DOC = [entity("Doc", "new", {"public": True}, [("Folder", "f")])]


def _two_modes(folder: Path) -> Path:
    """Stores ``skip`` and ``deny``: the same schema, policies, link and entities."""
    for mode in ("skip", "deny"):
        write_store(
            folder,
            mode,
            {
                "schema.cedarschema": SCHEMA,
                "policies.cedar": POLICIES,
                "links.json": LINKS,
                "entities.json": ENTITIES,
                "store.toml": (
                    f'validation = "strict"\non_evaluation_error = "{mode}"\n'
                    'request_entity_types = ["Doc"]\n'
                ),
            },
        )
    return folder


def _items(version: int) -> list[pb.IsAuthorizedRequest]:
    """Every combination, plus the variants that take other paths through a batch."""
    items = []
    for store in ("skip", "deny"):
        for principal in ("User::alice", "User::bob", "User::carol", "User::ghost"):
            for action in ("Action::read", "Action::write"):
                for resource in ("Doc::d1", "Doc::d2", "Doc::d3", "Doc::ghost"):
                    for context in CONTEXTS:
                        items.append(ask(store, principal, resource, context, action=action))
    extra = []
    for n, base in enumerate(items[::9]):
        variant = pb.IsAuthorizedRequest()
        variant.CopyFrom(base)
        if n % 4 == 0:
            variant.explain = True
        elif n % 4 == 1:
            variant.min_entity_version = version
        elif n % 4 == 2:
            variant.resource.id = "new"
            variant.entities_json = json.dumps(NEW_DOC)
        else:
            variant.min_entity_version = version + 1  # newer than the store: refused
        extra.append(variant)
    broken = pb.IsAuthorizedRequest(policy_store_id="skip")  # no principal
    return items + extra + [broken]


def _answer(code: grpc.StatusCode, reply: Any) -> tuple[object, ...]:
    if code != OK:
        return ("error", code.value[0], str(reply))
    return ("ok", reply.SerializeToString(deterministic=True))


def _batch_answer(item: pb.BatchAuthorizeResult) -> tuple[object, ...]:
    if item.WhichOneof("outcome") == "error":
        return ("error", item.error.code, item.error.message)
    return ("ok", item.response.SerializeToString(deterministic=True))


def _no_allow_through_errors(mode: str, reply: pb.IsAuthorizedResponse) -> bool:
    """An ALLOW never carries the errors its store's mode says must deny."""
    if reply.decision != pb.DECISION_ALLOW:
        return True
    if mode == "deny":
        return not reply.errors
    return all(e.policy_id.startswith("p-") or e.policy_id == "share-bob-d2" for e in reply.errors)


async def test_batch_items_answer_exactly_as_the_same_requests_one_by_one(tmp_path: Path) -> None:
    """Hostile move: batches that mix both error modes' stores, every policy selection (scoped
    permits, a template link, forbids whose condition errors on a ghost entity or an
    overflow), duplicates, explain, request entities and min_entity_version at and past the
    store's, shuffled so that grouped and lone items interleave. Every item's answer must be
    byte for byte the IsAuthorized answer, and no ALLOW may carry an error its mode counts."""
    async with serve_stores(_two_modes(tmp_path)) as served:
        written = await served.entities.PutEntities(
            epb.PutEntitiesRequest(
                policy_store_id="skip", entities_json=json.dumps([ENTITIES[-1]])
            ),
            timeout=5,
        )
        await served.entities.PutEntities(
            epb.PutEntitiesRequest(
                policy_store_id="deny", entities_json=json.dumps([ENTITIES[-1]])
            ),
            timeout=5,
        )
        await asyncio.sleep(0.3)  # the handle of the written version is built meanwhile
        items = _items(written.version)
        alone = [_answer(*await outcome(served.authz.IsAuthorized(i, timeout=5))) for i in items]
        allowed = 0
        for item, single in zip(items, alone, strict=True):
            if single[0] == "ok":
                decided = pb.IsAuthorizedResponse.FromString(single[1])  # type: ignore[arg-type]
                assert _no_allow_through_errors(item.policy_store_id, decided), item
                allowed += decided.decision == pb.DECISION_ALLOW
        assert allowed > 20, "the corpus must hold ALLOWs for the comparison to mean anything"
        # Interleave: a stride through the list, duplicates included, 100 items a batch.
        order = [(k * 37) % len(items) for k in range(len(items))] + list(range(0, 60, 3))
        for start in range(0, len(order), 100):
            chunk = order[start : start + 100]
            reply = await served.authz.BatchAuthorize(
                pb.BatchAuthorizeRequest(requests=[items[i] for i in chunk]), timeout=20
            )
            assert len(reply.results) == len(chunk)
            for index, result in zip(chunk, reply.results, strict=True):
                assert _batch_answer(result) == alone[index], items[index]


# --- 2. Health names to a caller granted nothing ----------------------------------------------


async def test_a_caller_granted_another_store_learns_nothing_from_spelled_variants(
    tmp_path: Path,
) -> None:
    """Hostile move: a caller with a valid token but no store of its own (and no token at all)
    asks Check and Watch for the real store under case, Unicode, whitespace, prefix and
    suffix variants, and for an invented store: each name gets the same answer, the one an
    unknown name gets. A caller granted the store sees it (the test's control)."""
    write_callers(
        tmp_path,
        '[[callers]]\nid = "nobody"\nmethods = ["decisions"]\nstores = ["other-tenant"]\n'
        f'token_sha256 = ["{token_sha256("nobody-token")}"]\n'
        '[[callers]]\nid = "owner"\nmethods = ["decisions"]\nstores = ["lending"]\n'
        f'token_sha256 = ["{token_sha256("owner-token")}"]\n',
    )
    from tests.conftest import POLICIES as LENDING

    names = [
        "store/lending",
        "store/LENDING",
        "store/lending ",
        "store/lending/",
        "store//lending",
        "store/lend\u0131ng",
        "store/lending\u200b",
        "STORE/lending",
        "store/*",
        "store/",
        "store/no-such-store",
    ]
    async with serve_stores(
        LENDING, default_store="lending", callers_file=tmp_path / "callers.toml"
    ) as served:
        health = health_pb2_grpc.HealthStub(served.channel)

        async def check(name: str, token: str | None) -> object:
            metadata = bearer(token) if token else None
            code, reply = await outcome(
                health.Check(health_pb2.HealthCheckRequest(service=name), metadata=metadata)
            )
            return code if code != OK else reply.status

        async def watch(name: str, token: str | None) -> object:
            metadata = bearer(token) if token else None
            call = health.Watch(
                health_pb2.HealthCheckRequest(service=name), metadata=metadata, timeout=5
            )
            try:
                first = await call.read()
            finally:
                call.cancel()
            assert isinstance(first, health_pb2.HealthCheckResponse)
            return first.status

        for token in (None, "nobody-token", "not-a-token"):
            checks = {name: await check(name, token) for name in names}
            watches = {name: await watch(name, token) for name in names}
            assert set(checks.values()) == {grpc.StatusCode.NOT_FOUND}, checks
            unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            assert set(watches.values()) == {unknown}, watches
        serving = health_pb2.HealthCheckResponse.SERVING
        assert await check("store/lending", "owner-token") == serving
        assert await watch("store/lending", "owner-token") == serving
        assert await check("store/LENDING", "owner-token") == grpc.StatusCode.NOT_FOUND


# --- 3. A hostile server answering the CLI -----------------------------------------------------

Reply = Callable[[bytes], bytes]
CLI_SECONDS = 30.0


@asynccontextmanager
async def hostile_server(replies: dict[str, Reply]) -> AsyncIterator[str]:
    """A real gRPC server on loopback whose methods (``/service/Method``) answer with the bytes
    ``replies`` make from the request's bytes; any other method is UNIMPLEMENTED."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for path, make in replies.items():
        service, _, method = path.strip("/").partition("/")

        def bind(make: Reply) -> Callable[[bytes, Any], Any]:
            async def answer(request: bytes, context: Any) -> bytes:
                return make(request)

            return answer

        by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(bind(make))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def verdict_cli(*args: str) -> tuple[int, str, str]:
    """Run ``verdict ARGS`` (exit code, stdout, stderr), the hostile server on this loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verdict",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VERDICT_TOKEN": ""},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


HEALTH_CHECK = "/grpc.health.v1.Health/Check"
GET_ENTITIES = "/verdict.v1.EntityService/GetEntities"
IS_AUTHORIZED = "/verdict.v1.AuthorizationService/IsAuthorized"
BATCH = "/verdict.v1.AuthorizationService/BatchAuthorize"


async def test_healthcheck_reports_an_unknown_status_as_unhealthy_in_one_line() -> None:
    """Hostile move: the server answers Check with status 99 (proto3 keeps unknown enum
    values). The probe must say unhealthy (exit 1) in one line, never crash."""
    unknown = health_pb2.HealthCheckResponse(status=99)
    async with hostile_server({HEALTH_CHECK: lambda _: unknown.SerializeToString()}) as where:
        code, _, err = await verdict_cli("healthcheck", "--server", where)
    assert code == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("entities_json", ["{not json", "[" * 100_000])
async def test_entities_get_refuses_a_reply_that_is_not_json_in_one_line(
    entities_json: str,
) -> None:
    """Hostile move: GetEntities answers with text that is not JSON (or nests past what
    Python's parser can hold). The command must stop with one `error:` line and exit 2."""
    read = epb.GetEntitiesResponse(entities_json=entities_json, version=1)
    async with hostile_server({GET_ENTITIES: lambda _: read.SerializeToString()}) as where:
        code, _, err = await verdict_cli("entities", "get", "--server", where, 'User::"a"')
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: "), err


async def test_check_treats_a_reply_without_a_decision_as_deny() -> None:
    """Hostile move: IsAuthorized answers an empty reply (DECISION_UNSPECIFIED). `verdict
    check --server` must not call it ALLOW: DENY, exit 1."""
    empty = pb.IsAuthorizedResponse().SerializeToString()
    async with hostile_server({IS_AUTHORIZED: lambda _: empty}) as where:
        code, out, err = await verdict_cli(
            "check",
            "--server",
            where,
            "--principal",
            'User::"a"',
            "--action",
            'Action::"read"',
            "--resource",
            'Doc::"d"',
        )
    assert code == 1, (out, err)
    assert "decision: DENY" in out
    assert "ALLOW" not in out


def _suite(folder: Path) -> tuple[Path, Path]:
    """A one-store folder and a suite of default-deny cases only."""
    stores = _two_modes(folder / "stores")
    cases = [
        {
            "name": f"carol cannot {action} {doc}",
            "principal": "User::carol",
            "action": f"Action::{action}",
            "resource": f"Doc::{doc}",
            "expect": "deny",
        }
        for action in ("read", "write")
        for doc in ("d2", "d3")
    ]
    suite = folder / "deny.json"
    suite.write_text(json.dumps({"name": "default deny", "store": "deny", "cases": cases}))
    return stores, suite


def _results(make: Callable[[int], list[pb.BatchAuthorizeResult]]) -> Reply:
    def answer(request: bytes) -> bytes:
        count = len(pb.BatchAuthorizeRequest.FromString(request).requests)
        return pb.BatchAuthorizeResponse(results=make(count)).SerializeToString()

    return answer


async def test_the_deny_only_suite_passes_against_the_real_server(tmp_path: Path) -> None:
    """The control for the two tests below: the suite is right, a real server passes it."""
    stores, suite = _suite(tmp_path)
    code, out, err = await verdict_cli("test", "--stores", str(stores), str(suite))
    assert code == 0, (out, err)


@pytest.mark.parametrize("results", [0, 1, 5])
async def test_test_server_refuses_a_batch_reply_of_the_wrong_length(
    tmp_path: Path, results: int
) -> None:
    """Hostile move: BatchAuthorize answers with fewer (or more) results than it was sent:
    nothing may be judged from it, one `error:` line, exit 2 (the server could not be asked)."""
    stores, suite = _suite(tmp_path)
    deny = pb.BatchAuthorizeResult(response=pb.IsAuthorizedResponse(decision=pb.DECISION_DENY))
    async with hostile_server({BATCH: _results(lambda _: [deny] * results)}) as where:
        code, out, err = await verdict_cli(
            "test", "--stores", str(stores), "--server", where, str(suite)
        )
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert "passed" not in out or "0 passed" in out


@pytest.mark.parametrize(
    "item",
    [
        pb.BatchAuthorizeResult(response=pb.IsAuthorizedResponse()),
        pb.BatchAuthorizeResult(),  # neither a response nor an error
    ],
    ids=["no-decision", "empty-item"],
)
async def test_test_server_never_passes_a_case_on_a_reply_without_a_decision(
    tmp_path: Path, item: pb.BatchAuthorizeResult
) -> None:
    """Hostile move: every item is answered with an IsAuthorizedResponse that holds no
    decision, or with an item that holds nothing. A decision point may read that as DENY; a
    test report must not call the case passed (exit 0), or a broken server passes every deny
    case of a suite: the run stops with one line, exit 2."""
    stores, suite = _suite(tmp_path)
    async with hostile_server({BATCH: _results(lambda n: [item] * n)}) as where:
        code, out, err = await verdict_cli(
            "test", "--stores", str(stores), "--server", where, str(suite)
        )
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert err.startswith("error: the server at "), err
