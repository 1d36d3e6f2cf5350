"""The policy index: a store's policies by scope, and the policies a request's scope can match.

Cedar checks a policy's scope before its conditions and stops at the first constraint that
fails, so a policy whose scope does not match a request is never evaluated: it neither decides
nor errors. Evaluating a request against only the policies whose scope can match it therefore
gives exactly the full set's decision, determining policies and errors, at a cost that follows
the policies that apply rather than all of them (tests/security/test_policy_index.py checks
this against Cedar itself).

Each policy is filed under one key, the most selective its scope has: the uid of a principal or
resource ``==``/``in`` (smaller bucket first), else its action uids, else a principal or
resource type (``is``), else the always-selected list. A request looks up the buckets of its
principal, action and resource and all their ancestors, then checks each candidate's whole
scope; a selection may hold a policy whose scope does not match (never one that does) without
changing any answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from verdict import cedar
from verdict.cedar import PolicySetHandle, SchemaHandle
from verdict.cedar_json import parse_uid
from verdict.model import EntityUid, JsonObject
from verdict.policy.policy_sets import PolicySetCache, SelectionCacheLimits
from verdict.policy.scope import Op, PolicyScope, read_scope

Triple = tuple[EntityUid, EntityUid, EntityUid]
# uid -> its direct parents, as the entities handed to Cedar say.
Parents = Mapping[EntityUid, Sequence[EntityUid]]
PREBUILD_FULL_SET = 1_000  # policies up to which the whole set is built (and checked) at load


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """One evaluable policy: a static policy or a template link, with its scope and its
    pre-encoded part of a policy-set document (a member of ``staticPolicies`` or of
    ``templateLinks``)."""

    id: str
    scope: PolicyScope
    part: str
    template: str = ""  # a link's template id


def static_entry(policy_id: str, est: JsonObject) -> PolicyEntry:
    """The entry of a static policy in Cedar's JSON form."""
    return PolicyEntry(policy_id, read_scope(est, {}), _member(policy_id, est))


def link_entry(link: JsonObject, templates: Mapping[str, JsonObject]) -> PolicyEntry:
    """The entry of a template link (``templateId``, ``newId``, ``values``); ValueError when
    its template is unknown or its values do not fill exactly the template's slots."""
    template_id, new_id = link.get("templateId"), link.get("newId")
    if not isinstance(template_id, str) or not isinstance(new_id, str):
        raise ValueError("a link needs a templateId and a newId")
    template = templates.get(template_id)
    if template is None:
        raise ValueError("link names no template of this store")
    values = link.get("values", {})
    slots = {
        slot: uid
        for slot, value in (values.items() if isinstance(values, dict) else ())
        if (uid := parse_uid(value)) is not None
    }
    if set(slots) != _slots(template) or len(slots) != len(values):
        raise ValueError("link values must fill exactly the template's slots with uids")
    return PolicyEntry(new_id, read_scope(template, slots), _compact(link), template_id)


def action_parents(schema: SchemaHandle | None) -> dict[EntityUid, tuple[EntityUid, ...]]:
    """Each action the schema declares and its ancestors: Cedar adds these action entities to
    every evaluation's entities, so they decide ``action in`` along with the slice's own."""
    found: dict[EntityUid, tuple[EntityUid, ...]] = {}
    for entity in cedar.schema_actions(schema) if schema is not None else ():
        uid = parse_uid(entity.get("uid"))
        if uid is not None:
            parents = entity.get("parents", [])
            found[uid] = tuple(u for p in parents if (u := parse_uid(p)) is not None)
    return found


def template_part(template_id: str, est: JsonObject) -> str:
    """A template's member of a policy-set document's ``templates``."""
    return _member(template_id, est)


class PolicyIndex:
    """A store's policies by scope; answers which policies a request can match and holds the
    policy sets built for such selections."""

    def __init__(
        self,
        entries: Sequence[PolicyEntry],
        templates: Mapping[str, str],
        action_parents: Mapping[EntityUid, Iterable[EntityUid]],
        limits: SelectionCacheLimits,
    ) -> None:
        self._entries = tuple(entries)
        ids = [e.id for e in self._entries] + list(templates)
        if len(set(ids)) != len(ids):
            raise ValueError("policy, template and link ids must be unique")
        self._templates = dict(templates)
        self._action_parents = {uid: tuple(up) for uid, up in action_parents.items()}
        self._always: list[int] = []
        # Buckets: principal uid, action uid, resource uid, principal type, resource type.
        self._buckets: tuple[dict[Any, list[int]], ...] = ({}, {}, {}, {}, {})
        for number, entry in enumerate(self._entries):
            self._file(number, entry.scope)
        self._limits = limits
        self._cache = PolicySetCache(limits)
        self.full_key = tuple(range(len(self._entries)))
        self.policy_set(tuple(self._always))
        if len(self._entries) <= PREBUILD_FULL_SET:
            self.policy_set(self.full_key)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cache_limits(self) -> SelectionCacheLimits:
        """The bounds of this index's selection caches (others built per selection use them)."""
        return self._limits

    def _file(self, number: int, scope: PolicyScope) -> None:
        principal, action, resource = self._buckets[:3]
        by_uid = [
            (bucket, c.uids[0])
            for bucket, c in ((principal, scope.principal), (resource, scope.resource))
            if c.op in (Op.EQ, Op.IN, Op.IS_IN)
        ]
        if by_uid:
            bucket, key = min(by_uid, key=lambda pair: len(pair[0].get(pair[1], ())))
            bucket.setdefault(key, []).append(number)
        elif scope.action.op in (Op.EQ, Op.IN):
            for uid in set(scope.action.uids):
                action.setdefault(uid, []).append(number)
        elif scope.principal.op is Op.IS or scope.resource.op is Op.IS:
            by_type = [
                (types, c.type)
                for types, c in (
                    (self._buckets[3], scope.principal),
                    (self._buckets[4], scope.resource),
                )
                if c.op is Op.IS
            ]
            types, name = min(by_type, key=lambda pair: len(pair[0].get(pair[1], ())))
            types.setdefault(name, []).append(number)
        else:
            self._always.append(number)

    def select(self, requests: Iterable[Triple], parents: Parents) -> tuple[int, ...]:
        """The entries whose scope matches any of ``requests`` (principal, action, resource),
        as a sorted key; ``parents`` must cover every ancestor of the three uids (a slice closed
        under parents does). Unscoped policies are always in."""
        chosen = set(self._always)
        principals, actions, resources, principal_types, resource_types = self._buckets
        for request in requests:
            principal, action, resource = request
            lineages = (
                lineage(principal, parents),
                lineage(action, parents, self._action_parents),
                lineage(resource, parents),
            )
            found: list[int] = []
            for bucket, uids in (
                (principals, lineages[0]),
                (actions, lineages[1]),
                (resources, lineages[2]),
            ):
                for uid in uids:
                    found += bucket.get(uid, ())
            found += principal_types.get(principal.type, ())
            found += resource_types.get(resource.type, ())
            entries = self._entries
            chosen.update(n for n in found if entries[n].scope.matches(request, lineages))
        return tuple(sorted(chosen))

    def forms(self, key: tuple[int, ...]) -> list[tuple[str, JsonObject]]:
        """Each entry's id and Cedar JSON form (a link: its template's form, whose conditions
        are the link's), parsed again from the pre-encoded parts (for explanations only)."""
        found = []
        for number in key:
            entry = self._entries[number]
            member = self._templates[entry.template] if entry.template else entry.part
            form = json.loads("{" + member + "}")
            found.append((entry.id, next(iter(form.values()))))
        return found

    def policy_set(self, key: tuple[int, ...]) -> PolicySetHandle:
        """The policy set of the entries in ``key`` (a ``select`` answer), built once and kept
        while recently used."""
        return self._cache.get(key, lambda: self._build(key))

    def _build(self, key: tuple[int, ...]) -> PolicySetHandle:
        chosen = [self._entries[n] for n in key]
        statics = [e.part for e in chosen if not e.template]
        links = [e.part for e in chosen if e.template]
        templates = sorted({e.template for e in chosen if e.template})
        document = (
            '{"staticPolicies":{'
            + ",".join(statics)
            + '},"templates":{'
            + ",".join(self._templates[t] for t in templates)
            + '},"templateLinks":['
            + ",".join(links)
            + "]}"
        )
        return cedar.policy_set_from_json(document, [*(e.id for e in chosen), *templates])


def lineage(
    uid: EntityUid,
    parents: Parents,
    extra: Mapping[EntityUid, Sequence[EntityUid]] | None = None,
) -> Set[EntityUid]:
    """``uid`` and every ancestor reachable through ``parents`` (and ``extra``, the schema's
    action groups); an entity missing from ``parents`` has only itself."""
    seen = {uid}
    stack = [uid]
    while stack:
        node = stack.pop()
        above = parents.get(node, ())
        if extra is not None:
            above = (*above, *extra.get(node, ()))
        for parent in above:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _member(policy_id: str, est: JsonObject) -> str:
    return json.dumps(policy_id) + ":" + _compact(est)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _slots(template: JsonObject) -> set[str]:
    found = set()
    for part in ("principal", "resource"):
        node = template.get(part)
        if isinstance(node, dict):
            for holder in (node, node.get("in")):
                if isinstance(holder, dict) and isinstance(holder.get("slot"), str):
                    found.add(holder["slot"])
    return found
