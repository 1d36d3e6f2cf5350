"""Why a DENY is a DENY: a forbid, no permit, errors, or a principal or resource that does not
exist. Decided from Cedar's answer and the slice the decision was made with."""

from __future__ import annotations

from dataclasses import replace

from verdict.cedar_json import entity_uid
from verdict.model import AuthorizationRequest, AuthorizationResult, DenyKind
from verdict.store.base import EntitySlice


def with_deny_kind(
    result: AuthorizationResult, request: AuthorizationRequest, entity_slice: EntitySlice
) -> AuthorizationResult:
    """``result`` with its deny kind set (None for an ALLOW)."""
    return replace(result, deny_kind=deny_kind(result, request, entity_slice))


def deny_kind(
    result: AuthorizationResult, request: AuthorizationRequest, entity_slice: EntitySlice
) -> DenyKind | None:
    """A forbid that matched names itself; otherwise a principal or resource missing from both
    the store and the request's own entities explains the rest (the errors a missing entity
    causes included); then errors that forced the DENY; else no permit matched."""
    if result.allowed:
        return None
    if result.determining_policies:
        return DenyKind.EXPLICIT_FORBID
    sent = {entity_uid(e) for e in request.extra_entities}
    absent = entity_slice.missing - sent
    if request.principal in absent or request.resource in absent:
        return DenyKind.ENTITY_MISSING
    if result.denied_for_errors or result.errors:
        return DenyKind.EVALUATION_ERROR
    return DenyKind.NO_PERMIT_MATCHED
