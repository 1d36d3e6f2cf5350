"""Run cases through the server's engine, exactly as the server runs requests.

By default cases go, per entity set and in case order, in batches of the server's default size
through ``Authorizer.authorize_batch``, as BatchAuthorize does: the same slicing, pre-parsed
entity sets, shared Cedar calls and fail-closed rules, so ``verdict test`` measures what the
server does. With ``per_request`` each case goes alone through ``Authorizer.authorize``, as
IsAuthorized does. A test holds both to identical outcomes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from verdict.engine.authorizer import DEFAULT_MAX_BATCH, Authorizer
from verdict.engine.hierarchy import entity_set_vet
from verdict.engine.limits import DEFAULT_LIMITS
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest
from verdict.policy.holder import PolicyHolder
from verdict.policytest.loader import Plan, PolicyCase
from verdict.policytest.verdicts import Judgement, Outcome, judge
from verdict.store.memory import HandleSettings, MemoryEntityStore


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
    by_set: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        by_set.setdefault(case.entity_set, []).append(index)
    holder = PolicyHolder(plan.snapshot)
    outcomes: list[Outcome | None] = [None] * len(cases)
    for key, indexes in by_set.items():
        store = await _entity_store(plan, key)
        try:
            authorizer = Authorizer(holder, store, DEFAULT_MAX_BATCH, DEFAULT_LIMITS)
            requests = [cases[i].request for i in indexes]
            answers = await (_alone if per_request else _batched)(authorizer, requests)
        finally:
            await store.close()
        for index, outcome in zip(indexes, answers, strict=True):
            outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


async def _entity_store(plan: Plan, key: str) -> MemoryEntityStore:
    """The server's memory store over one entity set, its entities parsed as the server does."""
    store_id, entities = plan.entity_sets[key]
    schema = plan.snapshot.resolve(store_id).schema
    handles = HandleSettings({store_id: schema}, entity_set_vet(DEFAULT_LIMITS))
    store = MemoryEntityStore({store_id: entities}, handles=handles)
    await store.prepare()
    return store


async def _batched(authorizer: Authorizer, requests: list[AuthorizationRequest]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for start in range(0, len(requests), authorizer.max_batch):
        answers = await authorizer.authorize_batch(requests[start : start + authorizer.max_batch])
        outcomes += [Outcome.of(answer) for answer in answers]
    return outcomes


async def _alone(authorizer: Authorizer, requests: list[AuthorizationRequest]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            outcomes.append(Outcome.of(await authorizer.authorize(request)))
        except VerdictError as exc:
            outcomes.append(Outcome.of(exc))
    return outcomes
