"""After the engine answers: count each decision and hand its audit record to the audit log.

In the audit log's "deny" mode this raises AuditUnavailableError when the record cannot be
written, and the call fails with UNAVAILABLE instead of answering: no decision without its
record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from verdict.audit.log import AuditLog
from verdict.audit.record import CallInfo, decision_record
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult
from verdict.policy.holder import PolicyHolder
from verdict.telemetry import metrics
from verdict.transport.call_context import CALLER, REQUEST_ID

Answer = AuthorizationResult | VerdictError
# A request and its answer; None for a batch item refused before it was read (the answer
# is the error): it has a record too, at its position in the call.
Decided = tuple[AuthorizationRequest | None, Answer]


class DecisionRecorder:
    """Counts decisions in ``verdict_decisions_total`` and writes their audit records."""

    def __init__(self, policies: PolicyHolder, audit: AuditLog | None) -> None:
        self._policies = policies
        self.audit = audit

    async def decided(self, method: str, decided: Sequence[Decided], started: float) -> None:
        """Record one call's decisions: a batch's items, every one in order, ``item`` its
        position in the call."""
        for _, answer in decided:
            if isinstance(answer, AuthorizationResult):
                kind = answer.deny_kind.value if answer.deny_kind is not None else ""
                decision = answer.decision.value
                metrics.child(metrics.DECISIONS, answer.store_id, decision, kind).inc()
                if answer.errors:
                    metrics.child(metrics.EVALUATION_ERRORS, answer.store_id).inc()
        if self.audit is None:
            return
        call = CallInfo(REQUEST_ID.get(), CALLER.get(), method)
        latency = time.perf_counter() - started
        snapshot = self._policies.current
        records = []
        for index, (request, answer) in enumerate(decided):
            store = None
            if request is not None:
                store = snapshot.stores.get(request.store_id or snapshot.default_store)
            safe = store.settings.audit_context if store is not None else frozenset()
            item = index if method == "BatchAuthorize" else None
            records.append(decision_record(call, request, answer, latency, safe, item))
        await self.audit.record(records)
