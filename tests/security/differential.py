"""Run one generated example through cedarpy (the oracle) and through Verdict, and compare.

Verdict is reached three ways: the engine in process (memory store), and a real gRPC server on
loopback backed by a real Redis (IsAuthorized and BatchAuthorize). Entities are written through
Verdict's own write path each time, so acceptance is compared too: Verdict must accept exactly
the entity sets and requests Cedar accepts (apart from the non-canonical forms it refuses on
purpose), and decide what Cedar decides, failing closed when a permit only won because a policy
errored.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import cedarpy
import grpc
from hypothesis import event
from hypothesis.control import currently_in_test_context

from tests.security.cedar_corpus import PLAIN_POLICIES, TYPED_POLICIES, TYPED_SCHEMA
from tests.security.cedar_gen import Example, JsonObject
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.cedar_json import parse_context_json
from verdict.errors import RequestError, VerdictError
from verdict.model import AuthorizationRequest, Decision, EntityUid

T = TypeVar("T")
POLICY_IDS = {
    "typed": [p.split('"')[1] for p in TYPED_POLICIES],
    "plain": [p.split('"')[1] for p in PLAIN_POLICIES],
}
_POLICIES = {
    "typed": cedarpy.PolicySet.from_str("\n".join(TYPED_POLICIES)),
    "plain": cedarpy.PolicySet.from_str("\n".join(PLAIN_POLICIES)),
}
_SCHEMA = {"typed": cedarpy.Schema.from_str(TYPED_SCHEMA), "plain": None}


@dataclass(frozen=True)
class Answer:
    """A decision reduced to what must agree: decision, determining and erroring policy ids."""

    allow: bool
    determining: frozenset[str]
    errors: frozenset[str]


# What a path answered: an Answer, or "invalid" for INVALID_ARGUMENT / a RequestError.
Outcome = Answer | str


def cedar_accepts_entities(store: str, entities: list[JsonObject]) -> bool:
    """Whether Cedar parses the entity set (against the store's schema, if any)."""
    try:
        cedarpy.Entities.from_json_str(json.dumps(entities), _SCHEMA[store])
    except Exception:  # cedarpy raises several types; any of them means "rejected"
        return False
    return True


def oracle(store: str, entities: list[JsonObject], request: JsonObject) -> Outcome:
    """Cedar's answer, mapped to what fail-closed Verdict must return."""
    result = cedarpy.is_authorized(request, _POLICIES[store], entities, _SCHEMA[store])
    if result.decision == cedarpy.Decision.NoDecision:
        return "invalid"
    ids = POLICY_IDS[store]
    reasons = frozenset(ids[int(str(r).removeprefix("policy"))] for r in result.diagnostics.reasons)
    errors = frozenset(
        ids[int(str(e).split("`")[1].removeprefix("policy"))] for e in result.diagnostics.errors
    )
    allow = result.decision == cedarpy.Decision.Allow
    if allow and errors:  # fail closed: the errors decide, no policy determined the DENY
        return Answer(False, frozenset(), errors)
    return Answer(allow, reasons, errors)


class LoopThread:
    """An event loop in a background thread, so servers keep serving between examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class EnginePath:
    """The engine in process over the embedded memory store, written through EntityWrites."""

    app: App
    loop: LoopThread
    stored: dict[str, list[EntityUid]]

    def write(self, store: str, entities: list[JsonObject]) -> bool:
        async def replace() -> bool:
            if self.stored.get(store):
                await self.app.writes.delete(store, self.stored.pop(store))
            if not entities:
                return True
            try:
                await self.app.writes.put(store, json.dumps(entities))
            except RequestError:
                return False
            self.stored[store] = [EntityUid(e["uid"]["type"], e["uid"]["id"]) for e in entities]
            return True

        return self.loop.run(replace())

    def decide(self, store: str, requests: list[JsonObject]) -> list[Outcome]:
        async def one(request: JsonObject) -> Outcome:
            try:
                domain = _domain(store, request)
                return _from_result(await self.app.authorizer.authorize(domain))
            except RequestError:
                return "invalid"

        async def batch() -> list[Outcome]:
            items: list[AuthorizationRequest | VerdictError] = []
            for request in requests:
                try:
                    items.append(_domain(store, request))
                except RequestError as exc:
                    items.append(exc)
            answers = await self.app.authorizer.authorize_batch(items)
            return ["invalid" if isinstance(a, RequestError) else _from_result(a) for a in answers]

        singles = [self.loop.run(one(r)) for r in requests]
        batched = self.loop.run(batch())
        assert batched == singles, f"engine batch {batched} != single {singles}"
        return singles


@dataclass
class GrpcPath:
    """A real gRPC server on loopback over a real Redis; writes through EntityService."""

    channel: grpc.Channel
    stored: dict[str, list[pb.EntityUid]]

    def write(self, store: str, entities: list[JsonObject]) -> bool:
        entity_stub = epb_grpc.EntityServiceStub(self.channel)
        if self.stored.get(store):
            entity_stub.DeleteEntities(
                epb.DeleteEntitiesRequest(policy_store_id=store, uids=self.stored.pop(store)),
                timeout=10,
            )
        if not entities:
            return True
        try:
            entity_stub.PutEntities(
                epb.PutEntitiesRequest(policy_store_id=store, entities_json=json.dumps(entities)),
                timeout=10,
            )
        except grpc.RpcError as exc:
            _expect_invalid(exc)
            return False
        self.stored[store] = [pb.EntityUid(**e["uid"]) for e in entities]
        return True

    def decide(self, store: str, requests: list[JsonObject]) -> list[Outcome]:
        stub = pb_grpc.AuthorizationServiceStub(self.channel)
        messages = [_message(store, r) for r in requests]
        singles: list[Outcome] = []
        for message in messages:
            try:
                singles.append(_from_proto(stub.IsAuthorized(message, timeout=10)))
            except grpc.RpcError as exc:
                _expect_invalid(exc)
                singles.append("invalid")
        reply = stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=messages), timeout=10)
        batched: list[Outcome] = []
        for item in reply.results:
            if item.WhichOneof("outcome") == "error":
                assert item.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], item.error
                batched.append("invalid")
            else:
                batched.append(_from_proto(item.response))
        assert batched == singles, f"gRPC batch {batched} != single {singles}"
        return singles


def check(example: Example, paths: list[EnginePath | GrpcPath]) -> None:
    """Hold every path to the oracle on one example."""
    store, entities = example.store, example.entities
    odd = _has_odd_forms(entities)
    accepted = cedar_accepts_entities(store, entities)
    for path in paths:
        written = path.write(store, entities)
        if odd and not written:
            continue  # refused on purpose: a non-canonical form, never read differently
        assert written == accepted, f"{type(path).__name__}: wrote={written}, cedar={accepted}"
        if not written:
            _note("entities rejected")
            continue
        answers = path.decide(store, example.requests)
        for request, answer in zip(example.requests, answers, strict=True):
            expected = oracle(store, entities, request)
            _note(f"{type(path).__name__}: {_label(expected)}")
            if answer == "invalid" and _has_odd_forms(request["context"]):
                continue
            assert answer == expected, f"{type(path).__name__}: {answer} != cedar {expected}"


def _domain(store: str, request: JsonObject) -> AuthorizationRequest:
    return AuthorizationRequest(
        principal=EntityUid(**request["principal"]),
        action=EntityUid(**request["action"]),
        resource=EntityUid(**request["resource"]),
        context=parse_context_json(json.dumps(request["context"])),
        store_id=store,
    )


def _message(store: str, request: JsonObject) -> pb.IsAuthorizedRequest:
    return pb.IsAuthorizedRequest(
        principal=pb.EntityUid(**request["principal"]),
        action=pb.EntityUid(**request["action"]),
        resource=pb.EntityUid(**request["resource"]),
        context_json=json.dumps(request["context"]),
        policy_store_id=store,
    )


def _from_result(result: Any) -> Outcome:
    return Answer(
        result.decision is Decision.ALLOW,
        frozenset(result.determining_policies),
        frozenset(e.policy_id for e in result.errors),
    )


def _from_proto(response: pb.IsAuthorizedResponse) -> Outcome:
    return Answer(
        response.decision == pb.DECISION_ALLOW,
        frozenset(response.determining_policies),
        frozenset(e.policy_id for e in response.errors),
    )


def _has_odd_forms(value: Any) -> bool:
    """Whether a value holds a non-canonical reference or extension escape."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys = set(item)
            if ("__entity" in keys or "__extn" in keys) and len(keys) > 1:
                return True
            inner = item.get("__entity")
            if isinstance(inner, dict) and set(inner) != {"type", "id"}:
                return True
            if {"type", "id"} < keys:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _label(outcome: Outcome) -> str:
    if isinstance(outcome, str):
        return outcome
    kind = "ALLOW" if outcome.allow else "DENY"
    return f"{kind} with errors" if outcome.errors else kind


def _note(label: str) -> None:
    """Count an outcome in Hypothesis' statistics (only while Hypothesis runs the test)."""
    if currently_in_test_context():
        event(label)


def _expect_invalid(error: grpc.RpcError) -> None:
    """A refusal must be INVALID_ARGUMENT: anything else is a server fault, not a verdict."""
    code = error.code()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, code
