"""Why each policy whose scope matched did or did not apply: every top-level conjunct of its
conditions is evaluated by Cedar as a policy of its own, on the same request and entities.

Nothing here reasons about Cedar by hand: a conjunct held if Cedar's answer names its probe
as determining, errored if Cedar reports its probe as erroring, and was false otherwise.

The probes of a selection are built and evaluated in parts of PROBE_CHUNK policies, the caller's
deadline checked before each: a selection of thousands of policies takes seconds to explain.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from verdict import cedar
from verdict.cedar import Entities, PolicySetHandle
from verdict.engine.deadline import check_deadline
from verdict.engine.evaluate import cedar_request
from verdict.engine.selection import ParentMap
from verdict.model import AuthorizationRequest, JsonObject
from verdict.policy.index import PolicyIndex
from verdict.policy.policy_sets import SelectionCache, SelectionCacheLimits
from verdict.policy.snapshot import StoreSnapshot

_ALL = {"op": "All"}
# Policies per probe set: ~30 ms to build or evaluate for policies of a few conjuncts, so a
# passed deadline is noticed that soon; a selection this small is still one Cedar call.
PROBE_CHUNK = 256


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


@dataclass(frozen=True)
class _Clause:
    """A ``when``/``unless`` clause and the names of its conjuncts' probes, left to right."""

    kind: str
    probes: tuple[str, ...]


@dataclass(frozen=True)
class _Policy:
    policy_id: str
    effect: str
    clauses: tuple[_Clause, ...]


@dataclass(frozen=True)
class _ProbeSet:
    """What explaining one selection needs besides the request: its policies' clauses and
    every conjunct as a probe, in policy sets of PROBE_CHUNK policies' probes at most (none
    for policies without conditions)."""

    policies: tuple[_Policy, ...]
    policy_sets: tuple[PolicySetHandle, ...]


class Explainer:
    """Explains decisions, keeping the probes built for each selection of each loaded store
    version (dropped with the version): re-parsing the selection's forms and building its
    probe set took about half an explained decision's time."""

    def __init__(self) -> None:
        self._probe_sets: weakref.WeakKeyDictionary[PolicyIndex, SelectionCache[_ProbeSet]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # evaluation may run off the event loop

    def kept(self, index: PolicyIndex) -> SelectionCache[_ProbeSet] | None:
        """The probes kept for ``index``'s selections (None before its first explanation)."""
        with self._lock:
            return self._probe_sets.get(index)

    def explain(
        self,
        request: AuthorizationRequest,
        store: StoreSnapshot,
        entities: Entities,
        parents: ParentMap,
    ) -> tuple[PolicyExplanation, ...]:
        """The explanation of every policy whose scope matches ``request``, in load order.

        Raises DeadlineExceededError once the request's deadline has passed: before it starts
        (the decision may have used the time up), between parts and after the last. The
        explanation is part of the answer: never sent in part, and never sent late, where the
        server would count and audit as answered a decision its caller had given up on."""
        check_deadline(request.deadline)
        index = store.index
        key = index.select([(request.principal, request.action, request.resource)], parents)
        with self._lock:
            cache = self._probe_sets.get(index)
            if cache is None:
                cache = SelectionCache(_probe_limits(index.cache_limits))
                self._probe_sets[index] = cache
        probes = cache.get(key, lambda: _probe_set(index, key, request.deadline))
        held: set[str] = set()
        errored: set[str] = set()
        request_json = cedar_request(request)
        for policy_set in probes.policy_sets:
            check_deadline(request.deadline)
            raw = cedar.is_authorized(request_json, policy_set, entities, store.schema)
            held.update(raw.reasons)
            errored.update(e.policy_id for e in raw.errors)
        check_deadline(request.deadline)
        explained = [_explain_one(policy, held, errored) for policy in probes.policies]
        return tuple(sorted(explained, key=lambda e: store.position(e.policy_id)))


def _probe_limits(decisions: SelectionCacheLimits) -> SelectionCacheLimits:
    """An eighth of the decision cache's bounds: a policy has a probe per conjunct (several
    policies' worth of Cedar's memory), and explanations serve people debugging policies,
    not the decision path."""
    return SelectionCacheLimits(decisions.max_sets // 8, decisions.max_policies // 8)


def _probe_set(index: PolicyIndex, key: tuple[int, ...], deadline: float | None) -> _ProbeSet:
    """The probes of selection ``key``, a part at a time while the deadline allows (a set
    given up on is not kept: nothing is returned)."""
    policies: list[_Policy] = []
    policy_sets = []
    for start in range(0, len(key), PROBE_CHUNK):
        check_deadline(deadline)
        probes: dict[str, JsonObject] = {}
        forms = index.forms(key[start : start + PROBE_CHUNK])
        policies += _probes(forms, start, probes)
        if probes:
            policy_sets.append(cedar.build_policy_set(probes, {}))
    return _ProbeSet(tuple(policies), tuple(policy_sets))


def _probes(
    forms: list[tuple[str, JsonObject]], first: int, probes: dict[str, JsonObject]
) -> list[_Policy]:
    """The policies of ``forms`` (numbered from ``first``) with their clauses; each conjunct's
    probe is added to ``probes`` under a name unique in the selection."""
    policies = []
    for number, (policy_id, form) in enumerate(forms, start=first):
        clauses = []
        for clause, condition in enumerate(form.get("conditions", [])):
            names = []
            for part, body in enumerate(conjuncts(condition.get("body", {}))):
                name = f"{number}.{clause}.{part}"
                probes[name] = {
                    "effect": "permit",
                    "principal": _ALL,
                    "action": _ALL,
                    "resource": _ALL,
                    "conditions": [{"kind": "when", "body": body}],
                }
                names.append(name)
            clauses.append(_Clause(str(condition.get("kind", "when")), tuple(names)))
        policies.append(_Policy(policy_id, str(form.get("effect", "")), tuple(clauses)))
    return policies


def _explain_one(policy: _Policy, held: set[str], errored: set[str]) -> PolicyExplanation:
    checks: list[ConditionCheck] = []
    for clause in policy.clauses:
        if checks and checks[-1].outcome != "held":
            # Cedar stops at the first clause that keeps the policy from applying: what a
            # later one would do was never computed, and reporting it (an error it would
            # raise, say) would tell the caller about data Cedar never read.
            checks.append(ConditionCheck(clause.kind, "skipped"))
            continue
        checks.append(_check(clause.kind, list(clause.probes), held, errored))
    applies = all(c.outcome == "held" for c in checks)
    return PolicyExplanation(policy.policy_id, policy.effect, applies, tuple(checks))


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
