"""Turn Cedar's raw answer into a fail-closed AuthorizationResult or a field-naming error."""

from __future__ import annotations

from verdict.cedar import EvaluationFault, NoDecisionFault, RawDecision
from verdict.engine.request_problems import explain_no_decision
from verdict.errors import EntityDataError, RequestError
from verdict.model import AuthorizationRequest, AuthorizationResult, Decision, EvaluationError
from verdict.policy.snapshot import ErrorMode, StoreSnapshot


def interpret(
    raw: RawDecision,
    store: StoreSnapshot,
    entity_version: int = 0,
    request: AuthorizationRequest | None = None,
) -> AuthorizationResult:
    """Map Cedar's answer to ours. NoDecision raises (naming what ``request`` gets wrong, when
    given); an ALLOW that came with errors is a DENY under ``deny``, and under ``skip`` when an
    erroring policy is a forbid."""
    if raw.no_decision is not None:
        raise _no_decision_error(raw.no_decision, store, request)
    found = [_evaluation_error(e) for e in raw.errors]
    errors = tuple(sorted(found, key=lambda e: store.position(e.policy_id)))
    allowed = raw.decision == "Allow"
    if allowed and _errors_deny(errors, store):
        # The permits that matched did not decide anything: the errors did.
        return AuthorizationResult(
            Decision.DENY,
            (),
            errors,
            store.version,
            store.store_id,
            denied_for_errors=True,
            entity_version=entity_version,
        )
    return AuthorizationResult(
        decision=Decision.ALLOW if allowed else Decision.DENY,
        determining_policies=store.in_order(raw.reasons),
        errors=errors,
        policy_version=store.version,
        store_id=store.store_id,
        entity_version=entity_version,
    )


def _errors_deny(errors: tuple[EvaluationError, ...], store: StoreSnapshot) -> bool:
    """Whether these errors overturn an ALLOW. ``skip`` drops erroring permits only: a caller
    who can make a forbid error on purpose (a context reference to an entity that does not
    exist) must not dodge it. An id this store does not know counts as a forbid."""
    if store.settings.on_evaluation_error is ErrorMode.DENY:
        return bool(errors)
    return any(_effect(store, e.policy_id) != "permit" for e in errors)


def _effect(store: StoreSnapshot, policy_id: str) -> str:
    info = store.policies.get(policy_id)
    return info.effect if info is not None else "forbid"


def _evaluation_error(fault: EvaluationFault) -> EvaluationError:
    return EvaluationError(fault.policy_id, fault.category, detail=fault.text)


def _no_decision_error(
    fault: NoDecisionFault, store: StoreSnapshot, request: AuthorizationRequest | None
) -> Exception:
    if fault.entity_data:
        return EntityDataError("entity data for this request does not conform to the schema")
    if request is None:
        return RequestError(fault.field, fault.problem)
    return explain_no_decision(fault, request, store.schema_shape)
