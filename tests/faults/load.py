"""Closed-loop load with known answers, and the per-phase figures computed from its outcomes."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.cases import DecisionCase
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.model import EntityUid

# Reconnect quickly after the server restarts, so recovery measures Verdict, not grpc's backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
]
SLACK = 0.25  # seconds allowed for a request in flight around a write


@dataclass(frozen=True)
class Outcome:
    """One call of the steady load."""

    case: int
    started: float
    ended: float
    code: str
    allowed: bool | None


@dataclass(frozen=True)
class Revocation:
    """A principal suspended (a write through another replica) and later restored."""

    principal: EntityUid
    started: float
    committed: float
    restore_started: float = float("inf")
    restored: float = float("inf")


@dataclass
class Oracle:
    """The answer each case must get: its recorded one, except around revocations."""

    cases: Sequence[DecisionCase]
    grace: float
    revocations: list[Revocation] = field(default_factory=list)

    def expected(self, outcome: Outcome) -> str:
        """ "allow", "deny" or "either" (a window in which both answers are correct)."""
        case = self.cases[outcome.case]
        for rev in self.revocations:
            if case.principal != rev.principal or case.expect != "allow":
                continue
            bound = self.grace + SLACK
            if outcome.ended <= rev.started or outcome.started >= rev.restored + bound:
                continue
            if outcome.started >= rev.committed + bound and outcome.ended <= rev.restore_started:
                return "deny"
            return "either"
        return case.expect

    def verdict(self, outcome: Outcome) -> str:
        """ "answered", "failed_closed" or "wrongly_allowed"."""
        expected = self.expected(outcome)
        if outcome.code != "OK":
            return "failed_closed"
        if outcome.allowed and expected == "deny":
            return "wrongly_allowed"
        if not outcome.allowed and expected == "allow":
            return "failed_closed"  # a DENY where ALLOW was right: unavailable, not unsafe
        return "answered"


class SteadyLoad:
    """``workers`` clients, each sending the next case as soon as the last one answered."""

    def __init__(self, target: str, cases: Sequence[DecisionCase], workers: int, timeout: float):
        self.target = target
        self.workers = workers
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._requests = [
            build_request(c.principal, c.action, c.resource, context=c.context, store="lending")
            for c in cases
        ]
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        stub = pb_grpc.AuthorizationServiceStub(channel)
        self._channel = channel
        self._tasks = [asyncio.create_task(self._worker(stub)) for _ in range(self.workers)]

    async def stop(self) -> None:
        if not self._tasks:
            return
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._channel.close()

    async def _worker(self, stub: Any) -> None:
        while not self._stop.is_set():
            index = self._next % len(self._requests)
            self._next += 1
            started = time.monotonic()
            try:
                reply = await stub.IsAuthorized(self._requests[index], timeout=self.timeout)
                code, allowed = "OK", reply.decision == pb.DECISION_ALLOW
            except grpc.aio.AioRpcError as exc:
                code, allowed = exc.code().name, None
            self.outcomes.append(Outcome(index, started, time.monotonic(), code, allowed))
            if code != "OK":
                await asyncio.sleep(0.01)  # a refused worker must not spin


@dataclass
class Phase:
    """One fault: when it ran, when the fault was on, and what the suite noted."""

    name: str
    fault: str
    started: float
    fault_started: float = 0.0
    fault_ended: float = 0.0
    ended: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize(phase: Phase, outcomes: Sequence[Outcome], oracle: Oracle) -> dict[str, Any]:
    """The row of the fault table for ``phase``."""
    mine = [o for o in outcomes if phase.started <= o.started < phase.ended]
    verdicts = [oracle.verdict(o) for o in mine]
    counts = Counter(verdicts)
    bad = [o.ended for o, v in zip(mine, verdicts, strict=True) if v != "answered"]
    after_fault = [t for t in bad if t >= phase.fault_started]
    latencies = [1000 * (o.ended - o.started) for o in mine if o.code == "OK"]
    recover: float | None = 0.0
    if after_fault:
        last_bad = max(after_fault)
        recovered = any(
            o.started > last_bad and v == "answered" for o, v in zip(mine, verdicts, strict=True)
        )
        recover = round(max(0.0, last_bad - phase.fault_ended), 3) if recovered else None
    return {
        "phase": phase.name,
        "fault": phase.fault,
        "sent": len(mine),
        "answered": counts["answered"],
        "failed_closed": counts["failed_closed"],
        "wrongly_allowed": counts["wrongly_allowed"],
        "time_to_recover_s": recover,
        "failing_s": round(max(bad) - min(bad), 2) if bad else 0.0,
        "fault_seconds": round(phase.fault_ended - phase.fault_started, 2),
        "codes": dict(Counter(o.code for o in mine)),
        "p50_ms": _round(percentile(latencies, 50)),
        "p99_ms": _round(percentile(latencies, 99)),
        **phase.notes,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
