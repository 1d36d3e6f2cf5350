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
    request: AuthorizationRequest | None,
    answer: AuthorizationResult | VerdictError,
    latency_seconds: float,
    audit_context: Collection[str],
    item: int | None = None,
) -> dict[str, Any]:
    """One record; ``item`` is the position in a BatchAuthorize call (None for IsAuthorized).
    ``request`` None: a batch item refused before it was read (``answer`` says why): its
    record has no store, principal, action or resource, whose wire text was not valid."""
    record: dict[str, Any] = {
        "ts": _timestamp(),
        "decision_id": uuid.uuid4().hex,
        "request_id": call.request_id,
        "caller": call.caller,
        "method": call.method,
        "store": request.store_id if request is not None else "",
        "principal": uid_text(request.principal) if request is not None else None,
        "action": uid_text(request.action) if request is not None else None,
        "resource": uid_text(request.resource) if request is not None else None,
        "latency_ms": round(1000 * latency_seconds, 3),
    }
    if item is not None:
        record["item"] = item
    if request is None:
        return _error_fields(record, answer)
    recorded = {k: v for k, v in request.context.items() if k in audit_context}
    if recorded:
        record["context"] = recorded
    # Which attributes were sent (names only): replay knows when the record is not enough.
    record["context_keys"] = sorted(request.context)
    if isinstance(answer, VerdictError):
        return _error_fields(record, answer)
    record.update(
        store=answer.store_id,
        decision=answer.decision.value.upper(),
        deny_kind=answer.deny_kind.value if answer.deny_kind is not None else None,
        determining=list(answer.determining_policies),
        erroring=sorted({e.policy_id for e in answer.errors}),
        policy_version=answer.policy_version,
        entity_version=answer.entity_version,
    )
    return record


def _error_fields(
    record: dict[str, Any], answer: AuthorizationResult | VerdictError
) -> dict[str, Any]:
    """``record`` as the record of a request answered with an error (its type and field)."""
    record["decision"] = "ERROR"
    record["error"] = type(answer).__name__
    if isinstance(answer, RequestError):
        record["field"] = answer.field
    return record


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
