"""`verdict validate` warnings: things that load but are almost certainly mistakes."""

from __future__ import annotations

from verdict import cedar
from verdict.errors import Diagnostic
from verdict.model import JsonObject
from verdict.policy.loader import SourcePolicy, read_source_policies
from verdict.policy.positions import locate_in_policy
from verdict.policy.snapshot import StoreSnapshot, ValidationMode

_IMPOSSIBLE_SCOPE = "unable to find an applicable action given the policy scope constraints"


def store_warnings(store: StoreSnapshot) -> list[Diagnostic]:
    """Policies that can never apply and templates nobody links, located by file:line."""
    policies = read_source_policies(store.root)
    found = [*_constant_conditions(policies), *_unlinked_templates(store, policies)]
    if store.schema is not None and store.settings.validation is ValidationMode.OFF:
        found.extend(_impossible_scopes(store, policies))
    return sorted(found, key=lambda d: (d.file, d.line))


def _constant_conditions(policies: list[SourcePolicy]) -> list[Diagnostic]:
    """``when { false }`` or ``unless { true }``: the policy can never apply."""
    found = []
    for policy in policies:
        for condition in policy.est.get("conditions", []):
            if _never_holds(condition):
                message = f"policy {policy.info.id!r} can never apply: a condition is constant"
                found.append(Diagnostic(policy.info.file, policy.info.line, message))
                break
    return found


def _never_holds(condition: JsonObject) -> bool:
    body = condition.get("body")
    value = body.get("Value") if isinstance(body, dict) and len(body) == 1 else None
    kind = condition.get("kind")
    return (kind == "when" and value is False) or (kind == "unless" and value is True)


def _unlinked_templates(store: StoreSnapshot, policies: list[SourcePolicy]) -> list[Diagnostic]:
    linked = {p.template for p in store.policies.values() if p.template}
    return [
        Diagnostic(p.info.file, p.info.line, f"template {p.info.id!r} has no links")
        for p in policies
        if p.info.is_template and p.info.id not in linked
    ]


def _impossible_scopes(store: StoreSnapshot, policies: list[SourcePolicy]) -> list[Diagnostic]:
    """With validation off, Cedar's validator still knows a scope no action accepts."""
    assert store.schema is not None
    found = []
    for issue in cedar.validate([p.text for p in policies], store.schema):
        if _IMPOSSIBLE_SCOPE in issue.message:
            policy = policies[issue.position]
            line = locate_in_policy(policy.text, policy.info.line, issue.message)
            message = f"policy {policy.info.id!r} can never apply: no action accepts its scope"
            found.append(Diagnostic(policy.info.file, line, message))
    return found
