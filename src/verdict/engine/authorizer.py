"""The async decision shell: pick the snapshot, fetch the entity slice, evaluate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from verdict.cedar import Entities as EntitySet
from verdict.engine.deadline import check_deadline
from verdict.engine.deny_kind import deny_kind, with_deny_kind
from verdict.engine.evaluate import evaluate, evaluate_shared, slice_roots
from verdict.engine.explain import Explainer
from verdict.engine.limits import DEFAULT_LIMITS, EntityLimits
from verdict.engine.request_entities import check_before_fetch, check_slice
from verdict.engine.selection import ParentMap, parent_map
from verdict.engine.turns import give_turn
from verdict.errors import (
    BatchTooLargeError,
    EntityDataError,
    InternalError,
    StoreUnavailableError,
    VerdictError,
)
from verdict.model import AuthorizationRequest, AuthorizationResult, EntityUid, JsonObject
from verdict.policy.holder import PolicyHolder
from verdict.policy.snapshot import PolicySnapshot, StoreSnapshot
from verdict.store.base import EntityReader, EntitySlice, ReadOptions
from verdict.store.weight import NO_WEIGHT, Weight
from verdict.telemetry import metrics

DEFAULT_MAX_BATCH = 100
MAX_SHARED_GROUP = 256  # requests per Cedar call in a batch
WAVE_SECONDS = 0.01  # loop time a wave of batch items may take before others get a turn
BATCH_SNAPSHOT_ATTEMPTS = 3  # reads of a batch a policy reload may interrupt before UNAVAILABLE
log = structlog.get_logger(__name__)
Answer = AuthorizationResult | VerdictError


@dataclass(frozen=True)
class _Prepared:
    """A request with the store that answers it and its complete entity slice."""

    request: AuthorizationRequest
    store: StoreSnapshot
    slice: EntitySlice
    # A bound of the entity-ancestor pairs Cedar computes for this slice.
    pairs: int = 0


class Authorizer:
    """Answers authorization requests; knows neither gRPC nor the storage technology."""

    def __init__(
        self,
        policies: PolicyHolder,
        entities: EntityReader,
        max_batch: int = DEFAULT_MAX_BATCH,
        limits: EntityLimits = DEFAULT_LIMITS,
    ) -> None:
        self._policies = policies
        self._entities = entities
        self.max_batch = max_batch
        self._limits = limits
        self.explainer = Explainer()

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationResult:
        """One decision. Raises VerdictError for bad requests and store failures."""
        # One snapshot per decision: a concurrent reload never mixes policy versions.
        prepared = await self._prepare(self._policies.current, request)
        check_deadline(request.deadline)
        return self._evaluate_alone(prepared)

    async def authorize_batch(
        self,
        requests: Sequence[AuthorizationRequest | VerdictError],
    ) -> list[Answer]:
        """Answer each item independently, in order; an item's error does not affect the rest.

        Items that already failed to convert are passed in as their error and returned as is.
        Items of one store read at the same entity version and without request entities share
        one Cedar call over the union of their slices: each slice is complete and all are
        copies of one state, so the union changes no decision, and Cedar parses the entities
        once instead of once per item. Slices read at different versions are never merged:
        their union could hold a state that never existed. Between Cedar calls the loop is
        given back, so a batch costs other requests at most one call's time at once.
        """
        if len(requests) > self.max_batch:
            raise BatchTooLargeError(len(requests), self.max_batch)
        prepared = await self._prepare_consistently(requests)
        answers: list[Answer | None] = [
            p if isinstance(p, VerdictError) else None for p in prepared
        ]
        # Items of one call share the caller's deadline.
        deadline = next((r.deadline for r in requests if not isinstance(r, VerdictError)), None)
        for number, chunk in enumerate(_shared_groups(prepared, self._limits)):
            if number:
                await give_turn()
            check_deadline(deadline)
            group = [p for i in chunk if isinstance(p := prepared[i], _Prepared)]
            for index, answer in zip(chunk, self._evaluate_group(group), strict=True):
                answers[index] = answer
        return [a if a is not None else InternalError() for a in answers]

    async def _prepare_consistently(
        self, requests: Sequence[AuthorizationRequest | VerdictError]
    ) -> list[_Prepared | VerdictError]:
        """``_prepare_all`` under one policy snapshot that stayed current throughout.

        Items are read in waves with turns of the loop between them; a hot reload in such a
        turn installs the embedded store's new entities together with the new snapshot, and
        the later items would be evaluated by the old policies over the new entities (a
        state that never existed on disk: a role renamed in both files let its old holders
        in). Read again under the new snapshot; a store that keeps changing is UNAVAILABLE.
        """
        for _ in range(BATCH_SNAPSHOT_ATTEMPTS):
            snapshot = self._policies.current
            prepared = await self._prepare_all(snapshot, requests)
            if self._policies.current is snapshot:
                return prepared
        raise StoreUnavailableError("policies changed during every read of the batch")

    async def _prepare_all(
        self, snapshot: PolicySnapshot, requests: Sequence[AuthorizationRequest | VerdictError]
    ) -> list[_Prepared | VerdictError]:
        """Prepare items concurrently in waves sized so one wave's work on the loop stays near
        WAVE_SECONDS: reads overlap, but a batch of heavy items (an in-memory store reads
        without suspending) never runs one after another in a single turn of the loop."""
        prepared: list[_Prepared | VerdictError] = []
        wave = 1
        while len(prepared) < len(requests):
            part = requests[len(prepared) : len(prepared) + wave]
            started = time.perf_counter()
            prepared += await asyncio.gather(*(self._guarded_prepare(snapshot, r) for r in part))
            per_item = (time.perf_counter() - started) / len(part)
            if len(prepared) < len(requests):
                await give_turn()
            wave = max(1, min(2 * wave, int(WAVE_SECONDS / max(per_item, 1e-6))))
        return prepared

    async def _prepare(self, snapshot: PolicySnapshot, request: AuthorizationRequest) -> _Prepared:
        check_deadline(request.deadline)
        store = snapshot.resolve(request.store_id)
        # Checks that need no stored data come first: a refused request reads nothing.
        check_before_fetch(request, store, self._limits)
        options = ReadOptions(
            deadline=request.deadline,
            min_version=request.min_entity_version,
            # Request entities are checked against, and evaluated with, the listed slice.
            prepared=not request.extra_entities,
            schema=store.schema,
        )
        started = time.perf_counter()
        entity_slice = await self._entities.fetch_slice(
            store.store_id, slice_roots(request, store), options
        )
        metrics.child(metrics.ENTITY_READ_SECONDS, store.store_id).observe(
            time.perf_counter() - started
        )
        pairs = check_slice(request, store, entity_slice.entities, self._limits)
        return _Prepared(request, store, entity_slice, pairs)

    async def _guarded_prepare(
        self,
        snapshot: PolicySnapshot,
        item: AuthorizationRequest | VerdictError,
    ) -> _Prepared | VerdictError:
        if isinstance(item, VerdictError):
            return item
        try:
            return await self._prepare(snapshot, item)
        except VerdictError as exc:
            return exc
        except Exception as exc:  # one item's bug must not sink the whole batch
            log.error("batch_item_failed", error_type=type(exc).__name__)
            return InternalError()

    def _evaluate_alone(self, item: _Prepared) -> AuthorizationResult:
        entity_slice = item.slice
        try:
            result = evaluate(
                item.request,
                item.store,
                _entities(entity_slice),
                entity_slice.version,
                _parents(entity_slice),
            )
            result = with_deny_kind(result, item.request, entity_slice)
            if item.request.explain:
                parents = {**_parents(entity_slice), **parent_map(item.request.extra_entities)}
                entities = _entities(entity_slice)
                if item.request.extra_entities:
                    entities = [*entities, *item.request.extra_entities]  # type: ignore[misc]
                found = self.explainer.explain(item.request, item.store, entities, parents)
                result = replace(result, explanations=found)
            return result
        except EntityDataError:
            # Stored data that parses but fails the schema: as corrupt as unreadable JSON.
            metrics.CORRUPT_ENTITIES.labels(reason="schema_mismatch").inc()
            log.error("entity_data_corrupt", store=item.store.store_id, reason="schema_mismatch")
            raise

    def _evaluate_group(self, group: list[_Prepared]) -> list[Answer]:
        if len(group) == 1:
            return [self._guarded(group[0])]
        entities: EntitySet
        parents: dict[EntityUid, Sequence[EntityUid]] = {}
        for item in group:
            parents.update(_parents(item.slice))
        if group[0].slice.handle is not None:  # grouped by handle: all share this one
            entities = group[0].slice.handle
        else:
            union: dict[EntityUid, JsonObject] = {}
            for item in group:
                union.update(item.slice.entities)
            entities = list(union.values())
        try:
            answers = evaluate_shared(
                [p.request for p in group], group[0].store, entities, parents=parents
            )
        except Exception as exc:
            log.error("batch_group_failed", error_type=type(exc).__name__)
            answers = [InternalError() for _ in group]
        if any(isinstance(a, EntityDataError | InternalError) for a in answers):
            # One bad slice spoils the union: answer each item from its own slice instead.
            return [self._guarded(item) for item in group]
        return [
            a
            if isinstance(a, VerdictError)
            else replace(
                a,
                entity_version=p.slice.version,
                deny_kind=deny_kind(a, p.request, p.slice),
            )
            for a, p in zip(answers, group, strict=True)
        ]

    def _guarded(self, item: _Prepared) -> Answer:
        """``_evaluate_alone`` with its errors as answers, for batch items."""
        try:
            return self._evaluate_alone(item)
        except VerdictError as exc:
            return exc
        except Exception as exc:  # one item's bug must not sink the whole batch
            log.error("batch_item_failed", error_type=type(exc).__name__)
            return InternalError()


def _parents(entity_slice: EntitySlice) -> ParentMap:
    """The parents of the slice's entities, which the policy index selects by (the request's
    own entities are added by evaluate)."""
    if entity_slice.ancestry is not None:
        return entity_slice.ancestry
    return parent_map(entity_slice.entities.values())


def _entities(entity_slice: EntitySlice) -> EntitySet:
    """What Cedar evaluates a slice with: its parsed handle when the store gave one."""
    if entity_slice.handle is not None:
        return entity_slice.handle
    return list(entity_slice.entities.values())


def _shared_groups(
    prepared: Sequence[_Prepared | VerdictError], limits: EntityLimits
) -> list[list[int]]:
    """Indexes of items evaluated together: one store and entity version, no request entities
    (such an item is alone), and a union no larger than one request's slice may be. Items
    holding the same parsed handle share it as it is (a set already parsed and bounded:
    nothing is merged), up to MAX_SHARED_GROUP a call."""
    groups: dict[object, list[int]] = {}
    shared: dict[object, list[int]] = {}
    for index, item in enumerate(prepared):
        if isinstance(item, _Prepared):
            # Request entities and explanations need an evaluation of their own.
            alone = bool(item.request.extra_entities) or item.request.explain
            handle = item.slice.handle
            if handle is not None and not alone:
                # The handle is alive in ``prepared`` while groups exist: its id is unique.
                shared.setdefault((item.store.store_id, id(handle)), []).append(index)
                continue
            key = index if alone else (item.store.store_id, item.slice.version)
            groups.setdefault(key, []).append(index)
    chunks = [chunk for group in groups.values() for chunk in _bounded(group, prepared, limits)]
    for group in shared.values():
        chunks += [group[i : i + MAX_SHARED_GROUP] for i in range(0, len(group), MAX_SHARED_GROUP)]
    return chunks


def _bounded(
    group: list[int], prepared: Sequence[_Prepared | VerdictError], limits: EntityLimits
) -> Iterator[list[int]]:
    """Split a group so that no chunk's union holds more than max_slice_entities entities,
    max_slice_bytes or max_slice_values of stored entity JSON, (summing each slice's bound)
    max_pairs entity-ancestor pairs, or MAX_SHARED_GROUP items."""
    chunk: list[int] = []
    union: set[EntityUid] = set()
    pairs = 0
    weight = NO_WEIGHT
    cap = Weight(limits.max_slice_bytes, limits.max_slice_values)
    for index in group:
        item = prepared[index]
        assert isinstance(item, _Prepared)
        added = item.slice.entities.keys() - union
        grown = weight + _weigh(item.slice.weights, added)
        full = (
            len(chunk) >= MAX_SHARED_GROUP
            or len(union) + len(added) > limits.max_slice_entities
            or grown.exceeds(cap)
            or pairs + item.pairs > limits.hierarchy.max_pairs
        )
        if chunk and full:
            yield chunk
            chunk, union, pairs = [], set(), 0
            added = set(item.slice.entities)
            grown = _weigh(item.slice.weights, added)
        chunk.append(index)
        union |= added
        pairs += item.pairs
        weight = grown
    if chunk:
        yield chunk


def _weigh(weights: Mapping[EntityUid, Weight], uids: Iterable[EntityUid]) -> Weight:
    """The summed stored weight of ``uids`` (each slice's store weighed its entities)."""
    found = [weights.get(uid, NO_WEIGHT) for uid in uids]
    return Weight(sum(w.bytes for w in found), sum(w.values for w in found))
