"""Run cases through the server's engine: its entity slicing, Cedar call and fail-closed rules.

Two strategies give identical outcomes (a test holds them to it):

- ``per_request``: each case through ``Authorizer.authorize_batch``, exactly as the server does.
- grouped (default): the steps of ``Authorizer.authorize`` (``slice_roots``, the entity store's
  ``fetch_slice``, ``check_extra_entities``), then the engine's ``evaluate_shared`` for cases
  whose slices are identical, so Cedar parses each slice once per group instead of once per case
  (cases with their own entities go through ``evaluate`` alone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from verdict.engine.authorizer import Authorizer
from verdict.engine.evaluate import check_extra_entities, evaluate, evaluate_shared, slice_roots
from verdict.errors import VerdictError
from verdict.model import AuthorizationResult, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policytest.loader import Plan, PolicyCase
from verdict.policytest.verdicts import Judgement, Outcome, judge
from verdict.store.base import EntitySlice
from verdict.store.memory import MemoryEntityStore

MAX_GROUP = 256  # cases per Cedar call
PER_REQUEST_BATCH = 100  # the server's default batch limit
_SliceKey = tuple[str, frozenset[EntityUid]]  # (entity set, roots of the slice)


@dataclass(frozen=True)
class CaseResult:
    """A case, what the engine answered, and how that compares with the expectation."""

    case: PolicyCase
    outcome: Outcome
    judgement: Judgement

    @property
    def passed(self) -> bool:
        """Whether the case met every expectation."""
        return self.judgement.passed


@dataclass(frozen=True)
class RunReport:
    """The results of one run, in case order, and how long evaluation took."""

    results: tuple[CaseResult, ...]
    seconds: float

    @property
    def failed(self) -> list[CaseResult]:
        """The results that did not meet their expectation."""
        return [r for r in self.results if not r.passed]


def run_plan(plan: Plan, cases: Sequence[PolicyCase], *, per_request: bool = False) -> RunReport:
    """Evaluate ``cases`` (one event loop for the whole run) and judge every outcome."""
    started = time.perf_counter()
    outcomes = asyncio.run(evaluate_cases(plan, cases, per_request=per_request))
    seconds = time.perf_counter() - started
    results = tuple(
        CaseResult(c, o, judge(c.expected, o)) for c, o in zip(cases, outcomes, strict=True)
    )
    return RunReport(results, seconds)


async def evaluate_cases(
    plan: Plan, cases: Sequence[PolicyCase], *, per_request: bool = False
) -> list[Outcome]:
    """The engine's outcome for every case, in order."""
    readers = {
        key: MemoryEntityStore({store_id: entities})
        for key, (store_id, entities) in plan.entity_sets.items()
    }
    if per_request:
        return await _per_request(plan, cases, readers)
    return await _Grouped(plan, readers).run(cases)


async def _per_request(
    plan: Plan, cases: Sequence[PolicyCase], readers: dict[str, MemoryEntityStore]
) -> list[Outcome]:
    holder = PolicyHolder(plan.snapshot)
    authorizers = {
        key: Authorizer(holder, reader, PER_REQUEST_BATCH) for key, reader in readers.items()
    }
    outcomes: list[Outcome | None] = [None] * len(cases)
    by_set: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        by_set.setdefault(case.entity_set, []).append(index)
    for key, indexes in by_set.items():
        for chunk in _chunks(indexes, PER_REQUEST_BATCH):
            answers = await authorizers[key].authorize_batch([cases[i].request for i in chunk])
            for index, answer in zip(chunk, answers, strict=True):
                outcomes[index] = Outcome.of(answer)
    return [o for o in outcomes if o is not None]


class _Grouped:
    """Slices every case as the Authorizer does, then evaluates equal slices in one Cedar call."""

    def __init__(self, plan: Plan, readers: dict[str, MemoryEntityStore]) -> None:
        self._snapshot = plan.snapshot
        self._readers = readers
        self._slices: dict[_SliceKey, EntitySlice] = {}

    async def run(self, cases: Sequence[PolicyCase]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(cases)
        groups: dict[object, tuple[_SliceKey, list[int]]] = {}
        for index, case in enumerate(cases):
            try:
                key = await self._slice_key(case)
            except VerdictError as exc:
                outcomes[index] = Outcome.of(exc)
                continue
            # Per-case entities make the entity list unique to the case.
            group = (key, index) if case.request.extra_entities else key
            groups.setdefault(group, (key, []))[1].append(index)
        for key, indexes in groups.values():
            for chunk in _chunks(indexes, MAX_GROUP):
                for index, outcome in zip(
                    chunk, self._evaluate(key, [cases[i] for i in chunk]), strict=True
                ):
                    outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    async def _slice_key(self, case: PolicyCase) -> _SliceKey:
        request = case.request
        store = self._snapshot.resolve(request.store_id)
        key = (case.entity_set, frozenset(slice_roots(request, store)))
        entity_slice = self._slices.get(key)
        if entity_slice is None:
            reader = self._readers[case.entity_set]
            entity_slice = await reader.fetch_slice(store.store_id, key[1])
            self._slices[key] = entity_slice
        check_extra_entities(request, store, entity_slice.entities)
        return key

    def _evaluate(self, key: _SliceKey, group: list[PolicyCase]) -> list[Outcome]:
        first = group[0].request
        store = self._snapshot.resolve(first.store_id)
        entity_slice = self._slices[key]
        entities = list(entity_slice.entities.values())
        answers: list[AuthorizationResult | VerdictError]
        if first.extra_entities:  # a case with its own entities is always alone in its group
            try:
                answers = [evaluate(first, store, entities, entity_slice.version)]
            except VerdictError as exc:
                answers = [exc]
        else:
            requests = [case.request for case in group]
            answers = evaluate_shared(requests, store, entities, entity_slice.version)
        return [Outcome.of(answer) for answer in answers]


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
