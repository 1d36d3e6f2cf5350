"""Why each policy whose scope matched did or did not apply: every top-level conjunct of its
conditions is evaluated by Cedar as a policy of its own, on the same request and entities.

Nothing here reasons about Cedar by hand: a conjunct held if Cedar's answer names its probe
as determining, errored if Cedar reports its probe as erroring, and was false otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from verdict import cedar
from verdict.cedar import Entities
from verdict.engine.evaluate import cedar_request
from verdict.engine.selection import ParentMap
from verdict.model import AuthorizationRequest, JsonObject
from verdict.policy.snapshot import StoreSnapshot

_ALL = {"op": "All"}


@dataclass(frozen=True)
class ConditionCheck:
    """One ``when``/``unless`` clause: held, false (with the first false conjunct, 1-based)
    or errored (the first erroring conjunct)."""

    kind: str
    outcome: str
    conjunct: int = 0


@dataclass(frozen=True)
class PolicyExplanation:
    """A policy whose scope matched: whether it applies, and each clause's check."""

    policy_id: str
    effect: str
    applies: bool
    conditions: tuple[ConditionCheck, ...]


def conjuncts(body: JsonObject) -> list[JsonObject]:
    """The top-level ``&&`` operands of a condition, left to right."""
    found: list[JsonObject] = []
    stack = [body]
    while stack:
        node = stack.pop()
        both = node.get("&&") if isinstance(node, dict) and len(node) == 1 else None
        if isinstance(both, dict) and "left" in both and "right" in both:
            stack += [both["right"], both["left"]]
        else:
            found.append(node)
    return found


def explain(
    request: AuthorizationRequest,
    store: StoreSnapshot,
    entities: Entities,
    parents: ParentMap,
) -> tuple[PolicyExplanation, ...]:
    """The explanation of every policy whose scope matches ``request``, in load order."""
    key = store.index.select([(request.principal, request.action, request.resource)], parents)
    forms = store.index.forms(key)
    probes = dict(_probes(forms))
    held: set[str] = set()
    errored: set[str] = set()
    if probes:
        policy_set = cedar.build_policy_set(probes, {})
        raw = cedar.is_authorized(cedar_request(request), policy_set, entities, store.schema)
        held, errored = set(raw.reasons), {e.policy_id for e in raw.errors}
    explained = [
        _explain_one(number, policy_id, form, held, errored)
        for number, (policy_id, form) in enumerate(forms)
    ]
    return tuple(sorted(explained, key=lambda e: store.position(e.policy_id)))


def _probes(forms: list[tuple[str, JsonObject]]) -> Iterator[tuple[str, JsonObject]]:
    for number, (_, form) in enumerate(forms):
        for clause, condition in enumerate(form.get("conditions", [])):
            for part, body in enumerate(conjuncts(condition.get("body", {}))):
                probe = {
                    "effect": "permit",
                    "principal": _ALL,
                    "action": _ALL,
                    "resource": _ALL,
                    "conditions": [{"kind": "when", "body": body}],
                }
                yield f"{number}.{clause}.{part}", probe


def _explain_one(
    number: int, policy_id: str, form: JsonObject, held: set[str], errored: set[str]
) -> PolicyExplanation:
    checks: list[ConditionCheck] = []
    for clause, condition in enumerate(form.get("conditions", [])):
        kind = str(condition.get("kind", "when"))
        if checks and checks[-1].outcome != "held":
            # Cedar stops at the first clause that keeps the policy from applying: what a
            # later one would do was never computed, and reporting it (an error it would
            # raise, say) would tell the caller about data Cedar never read.
            checks.append(ConditionCheck(kind, "skipped"))
            continue
        parts = [f"{number}.{clause}.{p}" for p in range(len(conjuncts(condition["body"])))]
        checks.append(_check(kind, parts, held, errored))
    applies = all(c.outcome == "held" for c in checks)
    return PolicyExplanation(policy_id, str(form.get("effect", "")), applies, tuple(checks))


def _check(kind: str, parts: list[str], held: set[str], errored: set[str]) -> ConditionCheck:
    """One clause as Cedar evaluates ``a && b && ...``: left to right, stopping at the first
    conjunct that is false or errors. Each conjunct was probed alone, so a later one may have
    errored on data Cedar never reached (an overflow that depends on a hidden attribute):
    only what comes before the stop is reported."""
    for position, probe in enumerate(parts, start=1):
        if probe in errored:
            return ConditionCheck(kind, "errored", position)
        if probe not in held:
            # when: the clause is false here. unless { a && b }: a false conjunct makes the
            # body false, so the clause holds (the policy may apply).
            return ConditionCheck(kind, "false" if kind == "when" else "held", position)
    return ConditionCheck(kind, "held" if kind == "when" else "false")
