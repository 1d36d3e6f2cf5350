"""The audit record of one decision: who asked what, the answer and why, nothing of the loan.

Context attributes are recorded only when the store's ``audit_context`` names them; entity
attributes and Cedar's error text never are (they can carry personal and loan data).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from verdict.errors import RequestError, VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult, EntityUid


@dataclass(frozen=True)
class CallInfo:
    """What the transport knows about the call a decision belongs to."""

    request_id: str
    caller: str
    method: str


def uid_text(uid: EntityUid) -> dict[str, str]:
    """A uid as recorded: ``{"type", "id"}`` (any id, escaped by JSON, never reparsed)."""
    return {"type": uid.type, "id": uid.id}


def decision_record(
    call: CallInfo,
    request: AuthorizationRequest,
    answer: AuthorizationResult | VerdictError,
    latency_seconds: float,
    audit_context: Collection[str],
    item: int | None = None,
) -> dict[str, Any]:
    """One record; ``item`` is the position in a BatchAuthorize call (None for IsAuthorized)."""
    record: dict[str, Any] = {
        "ts": _timestamp(),
        "decision_id": uuid.uuid4().hex,
        "request_id": call.request_id,
        "caller": call.caller,
        "method": call.method,
        "store": request.store_id,
        "principal": uid_text(request.principal),
        "action": uid_text(request.action),
        "resource": uid_text(request.resource),
        "latency_ms": round(1000 * latency_seconds, 3),
    }
    if item is not None:
        record["item"] = item
    recorded = {k: v for k, v in request.context.items() if k in audit_context}
    if recorded:
        record["context"] = recorded
    # Which attributes were sent (names only): replay knows when the record is not enough.
    record["context_keys"] = sorted(request.context)
    if isinstance(answer, VerdictError):
        record["decision"] = "ERROR"
        record["error"] = type(answer).__name__
        if isinstance(answer, RequestError):
            record["field"] = answer.field
        return record
    record.update(
        store=answer.store_id,
        decision=answer.decision.value.upper(),
        deny_kind=deny_kind_of(answer),
        determining=list(answer.determining_policies),
        erroring=sorted({e.policy_id for e in answer.errors}),
        policy_version=answer.policy_version,
        entity_version=answer.entity_version,
    )
    return record


def deny_kind_of(result: AuthorizationResult) -> str | None:
    """Why a DENY is a DENY (None for an ALLOW): a forbid matched, evaluation errors forced it,
    or no permit matched."""
    if result.allowed:
        return None
    if result.denied_for_errors or (result.errors and not result.determining_policies):
        return "EVALUATION_ERROR"
    if result.determining_policies:
        return "EXPLICIT_FORBID"
    return "NO_PERMIT_MATCHED"


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
