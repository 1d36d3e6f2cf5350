"""Attack round 14: the policy index against full evaluation, driven through the API by a caller
who may write entities; read-your-writes and mixed states at two workers on one Redis while
writes and bulk loads run; the edge's wire counter and request metadata; cancelled calls.
Real `verdict serve` processes (one and two workers), a real redis-server on loopback, real
gRPC; cedarpy over the full policy set and every stored entity is the oracle.

Findings: none this round. Every attack below held and is kept as an ordinary test where it
adds coverage no earlier test has:

- Hierarchies written through PutEntities/DeleteEntities (random parents of several types,
  namespaced types ``A::B::T``, ids that look like types or hold ``::``, ``"``, ``\\``, NUL or
  nothing), against ``==``, ``in``, ``is``, ``is ... in`` scopes, action groups stored as
  entities, template links with ``?principal in``, forbids on ``resource.owner in`` and on a
  context reference, and requests whose principal or resource is an Action uid or a type no
  policy names: every decision equals Cedar's over all policies and all stored entities (a
  DENY where a forbid errored is the one allowed difference), on the memory store with one
  worker and on Redis with two (the decision asked through another connection with the
  write's min_entity_version).
- Two workers on one Redis, a writer flipping two states in which ``User::"u"`` is never in
  ``Group::"ok"`` (a mix of the two would put it there), ``verdict entities load`` switching
  between the same two states, six readers (IsAuthorized and 100-item BatchAuthorize) without
  min_entity_version: not one ALLOW (a state that never existed) in ~60,000 decisions.
- Wire counter: unknown fields at the highest field number and 10-byte varints between items,
  a top-level end-group in front of or after the items (protobuf refuses the message, so no
  count is needed): counted exactly as protobuf parses, with and without a callers file.
- Metadata: ``authorization-bin``, a repeated ``authorization``, an ``x-verdict-caller`` header
  alone or beside a narrow token, two tokens in one value: nothing beyond the token's grant.
- 1,200 BatchAuthorize calls of 100 cache-missing items with 1-20 ms deadlines against Redis
  with a pool of 4 connections: afterwards decisions are answered at once and correctly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cedarpy
import grpc

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.serve_process import fresh_channel
from tests.security.test_attack_round10 import (
    ALLOW,
    DENY,
    Metadata,
    callers_file,
    docs_store,
    raw_call,
    served,
)
from tests.security.wire_bytes import varint
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.client import build_request
from verdict.model import quote_id

Uid = dict[str, str]
Entity = dict[str, Any]
BATCH = "/verdict.v1.AuthorizationService/BatchAuthorize"

# --- The policy index against Cedar, through writes --------------------------------------------

IDS = ["a", "", "::", '"', "\\", "\x00", "User", "A::B::T", 'Group::"g"', "g", "grp", "view"]
TYPES = ["User", "Group", "A::B::T", "Action", "Doc", "A::B"]


def lit(type_: str, id_: str) -> str:
    """A uid as a Cedar literal."""
    return f"{type_}::{quote_id(id_)}"


def uid(type_: str, id_: str) -> Uid:
    return {"type": type_, "id": id_}


STATIC = [
    ("permit-all", "permit(principal, action, resource);"),
    ("f-in-g", f"forbid(principal in {lit('Group', 'g')}, action, resource);"),
    ("f-in-colons", f"forbid(principal in {lit('Group', '::')}, action, resource);"),
    (
        "f-is-abt",
        "forbid(principal is A::B::T, action, resource) "
        "when { principal has blocked && principal.blocked };",
    ),
    ("f-res-in", f"forbid(principal, action, resource in {lit('A::B::T', '')});"),
    ("f-eq-nul", f"forbid(principal == {lit('User', chr(0))}, action, resource);"),
    ("f-act-grp", f"forbid(principal, action in {lit('Action', 'grp')}, resource is Doc);"),
    ("f-isin", f"forbid(principal is User in {lit('Group', chr(34))}, action, resource);"),
    (
        "f-owner",
        "forbid(principal, action, resource) when "
        f"{{ resource has owner && resource.owner in {lit('Group', 'g')} }};",
    ),
    (
        "f-ctx",
        "forbid(principal, action, resource) when "
        f"{{ context has d && context.d in {lit('Group', 'grp')} }};",
    ),
    ("f-res-action", f"forbid(principal, action, resource in {lit('Action', 'view')});"),
    ("f-princ-action", f"forbid(principal in {lit('Action', 'grp')}, action, resource);"),
    (
        "f-bs",
        f"forbid(principal in {lit('A::B', chr(92))}, action == {lit('Action', 'edit')}, "
        "resource);",
    ),
    ("f-type-id", f"forbid(principal in {lit('Group', 'User')}, action, resource is A::B::T);"),
    (
        "f-lit-read",
        f"forbid(principal, action, resource) when {{ {lit('Group', 'A::B::T')}.blocked }};",
    ),
]
TEMPLATES = [
    ("t-in", "forbid(principal in ?principal, action, resource == ?resource);"),
    ("t-isin", "forbid(principal is A::B::T in ?principal, action, resource);"),
]
LINKS: list[tuple[str, str, dict[str, Uid]]] = [
    ("l1", "t-in", {"?principal": uid("Group", "\\"), "?resource": uid("Doc", "")}),
    ("l2", "t-isin", {"?principal": uid("User", "A::B::T")}),
    ("l3", "t-in", {"?principal": uid("A::B", ""), "?resource": uid("A::B::T", "::")}),
]


def index_store(tmp_path: Path) -> Path:
    """A schema-less API-populated store "s" of STATIC, TEMPLATES and LINKS."""
    stores = tmp_path / "stores"
    store = stores / "s"
    store.mkdir(parents=True)
    (store / "store.toml").write_text('validation = "off"\n')
    text = "".join(f'@id("{pid}")\n{body}\n' for pid, body in STATIC + TEMPLATES)
    (store / "p.cedar").write_text(text)
    links = [
        {"id": lid, "template": tid, "values": {k: lit(v["type"], v["id"]) for k, v in vs.items()}}
        for lid, tid, vs in LINKS
    ]
    (store / "links.json").write_text(json.dumps(links))
    return stores


def oracle_policies() -> str:
    """The same policies as Cedar text, each link written out as the static policy it makes."""
    parts = [f'@id("{pid}")\n{body}\n' for pid, body in STATIC]
    templates = dict(TEMPLATES)
    for lid, tid, values in LINKS:
        body = templates[tid]
        for slot, value in values.items():
            body = body.replace(slot, lit(value["type"], value["id"]))
        parts.append(f'@id("{lid}")\n{body}\n')
    return "".join(parts)


def random_uid(rng: random.Random) -> Uid:
    return uid(rng.choice(TYPES), rng.choice(IDS))


def random_entity(rng: random.Random) -> Entity:
    attrs: dict[str, Any] = {}
    if rng.random() < 0.3:
        attrs["blocked"] = rng.random() < 0.5
    if rng.random() < 0.3:
        attrs["owner"] = {"__entity": random_uid(rng)}
    parents = [random_uid(rng) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
    return {"uid": random_uid(rng), "attrs": attrs, "parents": parents}


def pb_uid(value: Uid) -> pb.EntityUid:
    return pb.EntityUid(type=value["type"], id=value["id"])


def differential_run(port: int, seed: int, rounds: int) -> list[str]:
    """Random writes and deletes through one connection, decisions through another (with the
    last write's version), each compared with Cedar over all policies and every entity the
    writes left; returns the mismatches (a DENY with errors where Cedar allows is not one)."""
    rng = random.Random(seed)
    state: dict[tuple[str, str], Entity] = {}
    policies = oracle_policies()
    mismatches: list[str] = []
    version = 0
    with fresh_channel(port) as writes, fresh_channel(port) as reads:
        entities = epb_grpc.EntityServiceStub(writes)
        decide = pb_grpc.AuthorizationServiceStub(reads)
        for _ in range(rounds):
            if rng.random() < 0.4:
                batch = [random_entity(rng) for _ in range(rng.choice([1, 2, 3]))]
                try:
                    put = epb.PutEntitiesRequest(
                        policy_store_id="s", entities_json=json.dumps(batch)
                    )
                    version = entities.PutEntities(put, timeout=10).version
                except grpc.RpcError as error:  # a cycle or a repeated uid: nothing written
                    refused = error.code()
                    if refused != grpc.StatusCode.INVALID_ARGUMENT:
                        mismatches.append(f"write refused {refused.name}: {error.details()}")
                else:
                    state.update({(e["uid"]["type"], e["uid"]["id"]): e for e in batch})
            elif rng.random() < 0.2:
                gone = [random_uid(rng) for _ in range(2)]
                delete = epb.DeleteEntitiesRequest(
                    policy_store_id="s", uids=[pb_uid(u) for u in gone]
                )
                version = entities.DeleteEntities(delete, timeout=10).version
                for u in gone:
                    state.pop((u["type"], u["id"]), None)
            if not version:
                continue
            for _ in range(4):
                principal, resource = random_uid(rng), random_uid(rng)
                action = uid("Action", rng.choice(["view", "edit", "grp"]))
                context = {"d": {"__entity": random_uid(rng)}} if rng.random() < 0.3 else {}
                request = pb.IsAuthorizedRequest(
                    policy_store_id="s",
                    principal=pb_uid(principal),
                    action=pb_uid(action),
                    resource=pb_uid(resource),
                    context_json=json.dumps(context) if context else "",
                    min_entity_version=version,
                )
                got = decide.IsAuthorized(request, timeout=10)
                cedar = cedarpy.is_authorized(
                    {
                        "principal": principal,
                        "action": action,
                        "resource": resource,
                        "context": context,
                    },
                    policies,
                    list(state.values()),
                )
                expected = ALLOW if cedar.decision.value == "Allow" else DENY
                errors = list(cedar.diagnostics.errors)
                if got.decision != expected and not (got.decision == DENY and errors):
                    mismatches.append(
                        f"{principal} {action} {resource} {context}: verdict "
                        f"{pb.Decision.Name(got.decision)} {list(got.determining_policies)}, "
                        f"cedar {cedar.decision.value} {list(cedar.diagnostics.reasons)} {errors}"
                    )
    return mismatches


def test_written_hierarchies_decide_as_cedar_on_the_memory_store(tmp_path: Path) -> None:
    """One worker, the memory store (its pre-parsed whole-store handles included): 400 rounds
    of random writes and 4 decisions each must all equal Cedar over every stored entity."""
    with served(index_store(tmp_path)) as (_, port, _log):
        assert differential_run(port, seed=14, rounds=400) == []


def test_written_hierarchies_decide_as_cedar_across_two_workers_on_redis(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Two workers over one Redis: writes on one connection, decisions with the write's
    min_entity_version on another (either worker, its cache warmed by earlier decisions)."""
    stores = index_store(tmp_path)
    with served(stores, "--redis-url", redis.url, workers=2) as (_, port, _log):
        assert differential_run(port, seed=41, rounds=300) == []


# --- Two workers, writes and bulk loads: never a state that never existed -----------------------


def group_entity(type_: str, id_: str, *parents: str) -> Entity:
    return {
        "uid": uid(type_, id_),
        "attrs": {},
        "parents": [uid("Group", parent) for parent in parents],
    }


# In A, u -> m1 and m2 -> ok; in B, u -> m2 and m1 -> ok. In neither is u in ok; u's entity
# of one state with the groups of the other puts it there.
STATE_A = [
    group_entity("User", "u", "m1"),
    group_entity("Group", "m1"),
    group_entity("Group", "m2", "ok"),
]
STATE_B = [
    group_entity("User", "u", "m2"),
    group_entity("Group", "m1", "ok"),
    group_entity("Group", "m2"),
]


def test_two_workers_never_decide_a_mixed_state_under_writes_and_bulk_loads(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """A writer flips A and B through PutEntities while `verdict entities load` switches the
    store between the same two states, and six readers (single calls and batches of 100) ask
    whether u is in ok on new connections of both workers, without min_entity_version: every
    answer must be DENY."""
    stores = tmp_path / "stores"
    store = stores / "s"
    store.mkdir(parents=True)
    (store / "store.toml").write_text('validation = "off"\nentities_source = "writes"\n')
    (store / "p.cedar").write_text(
        '@id("ok") permit(principal in Group::"ok", action, resource);\n'
    )
    (store / "entities.json").write_text(json.dumps(STATE_A))
    stop = threading.Event()
    wrong: list[int] = []
    problems: list[str] = []
    counts = {"writes": 0, "loads": 0, "decisions": 0}

    def writer(port: int) -> None:
        with fresh_channel(port) as channel:
            stub = epb_grpc.EntityServiceStub(channel)
            while not stop.is_set():
                state = STATE_B if counts["writes"] % 2 else STATE_A
                put = epb.PutEntitiesRequest(entities_json=json.dumps(state))
                stub.PutEntities(put, timeout=10)
                counts["writes"] += 1

    def loader() -> None:
        while not stop.is_set():
            staged = store / "entities.tmp"
            staged.write_text(json.dumps(STATE_B if counts["loads"] % 2 else STATE_A))
            os.replace(staged, store / "entities.json")
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "verdict",
                    "entities",
                    "load",
                    "--stores",
                    str(stores),
                    "--redis-url",
                    redis.url,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode:
                problems.append(done.stderr[-300:])
            counts["loads"] += 1

    def reader(port: int, batches: bool) -> None:
        item = build_request('User::"u"', 'Action::"v"', 'Doc::"d"')
        with fresh_channel(port) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            while not stop.is_set():
                try:
                    if batches:
                        reply = stub.BatchAuthorize(
                            pb.BatchAuthorizeRequest(requests=[item] * 100), timeout=10
                        )
                        answers = [r.response for r in reply.results]
                    else:
                        answers = [stub.IsAuthorized(item, timeout=10)]
                except grpc.RpcError as error:
                    problems.append(f"{error.code().name} {error.details()}")
                    continue
                counts["decisions"] += len(answers)
                wrong.extend(a.entity_version for a in answers if a.decision != DENY)

    with served(stores, "--redis-url", redis.url, workers=2) as (_, port, _log):
        with fresh_channel(port) as channel:
            put = epb.PutEntitiesRequest(entities_json=json.dumps(STATE_A))
            epb_grpc.EntityServiceStub(channel).PutEntities(put, timeout=10)
        threads = [threading.Thread(target=writer, args=(port,)), threading.Thread(target=loader)]
        threads += [threading.Thread(target=reader, args=(port, n % 2 == 1)) for n in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(8)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert counts["writes"] > 50, counts
    assert counts["loads"] >= 2, counts
    assert counts["decisions"] > 1000, counts
    assert problems == []
    assert wrong == [], f"ALLOWed at entity versions {wrong[:10]} ({len(wrong)} in all)"


# --- The edge: the wire counter and metadata ----------------------------------------------------


def test_the_wire_counter_agrees_with_protobuf_on_odd_spellings(tmp_path: Path) -> None:
    """BatchAuthorize bodies: items between unknown fields at the highest field number
    (2^29-1, length-delimited) and 10-byte varints are counted as items (100 answered, 101
    refused for the count); a top-level end-group before 101 items, or after 100 items and
    before 100 more, is refused as not protobuf (the counter stops there, protobuf refuses
    the message): with and without a callers file."""
    item = build_request('User::"alice"', 'Action::"view"', 'Doc::"d"').SerializeToString()
    one = b"\x0a" + varint(len(item)) + item
    highest = varint((2**29 - 1) << 3 | 2) + b"\x03abc"
    long_varint = b"\x10" + b"\xff" * 9 + b"\x01"

    def batch(count: int) -> bytes:
        return b"".join((highest if n % 2 else long_varint) + one for n in range(count))

    stores = docs_store(tmp_path)
    callers = callers_file(tmp_path, {"dec": ('["decisions"]', '["docs"]')})
    for args, metadata in (
        ((), ()),
        (("--callers-file", str(callers)), (("authorization", "Bearer dec-token"),)),
    ):
        with served(stores, *args) as (_, port, _log):
            with fresh_channel(port) as channel:
                call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    BATCH, request_serializer=None, response_deserializer=None
                )
                raw = call(batch(100), metadata=metadata, timeout=20)
            results = pb.BatchAuthorizeResponse.FromString(raw).results
            assert [r.response.decision for r in results] == [ALLOW] * 100
            assert raw_call(port, BATCH, batch(101), metadata) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "requests: more than 100 items in one batch",
            )
            not_protobuf = (
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: not a valid protobuf message",
            )
            assert raw_call(port, BATCH, b"\x0c" + batch(101), metadata) == not_protobuf
            assert (
                raw_call(port, BATCH, batch(100) + b"\x0c" + batch(100), metadata) == not_protobuf
            )


def test_metadata_tricks_grant_nothing_beyond_the_token(tmp_path: Path) -> None:
    """A decisions-only caller ("dec") and a root caller in one callers file: a binary
    ``authorization-bin`` carrying the token, the header twice, two tokens in one value and an
    ``x-verdict-caller: root`` header alone are UNAUTHENTICATED; beside dec's token,
    ``x-verdict-caller: root`` still cannot explain (PERMISSION_DENIED)."""
    stores = docs_store(tmp_path)
    grants = {
        "dec": ('["decisions"]', '["docs"]'),
        "root": ('["decisions", "explain", "entity-reads", "entity-writes", "admin"]', '["*"]'),
    }
    callers = callers_file(tmp_path, grants)
    plain = build_request('User::"alice"', 'Action::"view"', 'Doc::"d"')
    explained = build_request('User::"alice"', 'Action::"view"', 'Doc::"d"')
    explained.explain = True
    refused: list[Metadata] = [
        (("authorization-bin", b"Bearer dec-token"),),
        (("authorization", "Bearer dec-token"), ("authorization", "Bearer dec-token")),
        (("authorization", "Bearer dec-token, Bearer root-token"),),
        (("x-verdict-caller", "root"),),
        (("authorization", "Bearer root-token dec-token"),),
    ]

    def code(request: pb.IsAuthorizedRequest, metadata: Metadata) -> grpc.StatusCode:
        with fresh_channel(port) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            try:
                stub.IsAuthorized(request, metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    with served(stores, "--callers-file", str(callers)) as (_, port, _log):
        for metadata in refused:
            assert code(plain, metadata) == grpc.StatusCode.UNAUTHENTICATED, metadata
        beside = (("x-verdict-caller", "root"), ("authorization", "bearer dec-token"))
        assert code(plain, beside) == grpc.StatusCode.OK
        assert code(explained, beside) == grpc.StatusCode.PERMISSION_DENIED


# --- Cancelled calls against Redis ------------------------------------------------------------


def test_a_storm_of_cancelled_batches_leaves_redis_reads_working(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Eight callers send 150 BatchAuthorize calls each, 100 cache-missing items a call, with
    deadlines of 1-20 ms, against two workers whose Redis pool holds 4 connections: every
    call ends (OK or DEADLINE_EXCEEDED), and afterwards a suspended user is DENYed within
    100 ms on each of 20 new connections (no connection of the pool lost to a cancelled read,
    nothing left half-read)."""
    stores = docs_store(
        tmp_path,
        '@id("suspended") forbid(principal, action, resource) when '
        "{ principal has s && principal.s };\n",
    )
    (stores / "docs" / "entities.json").unlink()
    env = {"VERDICT_REDIS_MAX_CONNECTIONS": "4"}
    codes: list[grpc.StatusCode] = []

    def storm(port: int, caller: int) -> None:
        rng = random.Random(caller)
        with fresh_channel(port) as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for call in range(150):
                items = [
                    build_request(f'User::"x{caller}-{call}-{n}"', 'Action::"v"', f'Doc::"d{n}"')
                    for n in range(100)
                ]
                try:
                    stub.BatchAuthorize(
                        pb.BatchAuthorizeRequest(requests=items),
                        timeout=rng.choice([0.001, 0.002, 0.005, 0.01, 0.02]),
                    )
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())

    with served(stores, "--redis-url", redis.url, workers=2, env=env) as (_, port, _log):
        with fresh_channel(port) as channel:
            bad = {"uid": uid("User", "bad"), "attrs": {"s": True}, "parents": []}
            put = epb.PutEntitiesRequest(entities_json=json.dumps([bad]))
            epb_grpc.EntityServiceStub(channel).PutEntities(put, timeout=10)
        threads = [threading.Thread(target=storm, args=(port, n)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(codes) == 1200
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, set(codes)
        for n in range(20):
            with fresh_channel(port) as channel:
                started = time.monotonic()
                reply = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                    build_request('User::"bad"', 'Action::"v"', f'Doc::"n{n}"'), timeout=5
                )
                assert reply.decision == DENY
                assert time.monotonic() - started < 0.1
