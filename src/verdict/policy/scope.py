"""A policy's scope (its principal, action and resource constraints), read from Cedar's JSON."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from verdict.cedar_json import parse_uid
from verdict.model import EntityUid


class Op(enum.Enum):
    """The kinds of scope constraint Cedar has."""

    ALL = "All"
    EQ = "=="
    IN = "in"
    IS = "is"
    IS_IN = "is in"


@dataclass(frozen=True, slots=True)
class Constraint:
    """One scope constraint: ``uids`` for ==, in and is-in (action ``in [..]`` has several),
    ``type`` for is and is-in."""

    op: Op
    uids: tuple[EntityUid, ...] = ()
    type: str = ""

    def matches(self, uid: EntityUid, lineage: Set[EntityUid]) -> bool:
        """Whether Cedar's scope check passes for ``uid``, whose ``lineage`` is the uid and
        every ancestor Cedar knows of (just the uid for an entity missing from the slice)."""
        op = self.op
        if op is Op.ALL:
            return True
        if op is Op.EQ:
            return uid == self.uids[0]
        if op is Op.IN:
            return any(u in lineage for u in self.uids)
        if op is Op.IS:
            return uid.type == self.type
        return uid.type == self.type and self.uids[0] in lineage


ANY = Constraint(Op.ALL)


@dataclass(frozen=True, slots=True)
class PolicyScope:
    """The three constraints of one policy (a linked template's slots filled in)."""

    principal: Constraint
    action: Constraint
    resource: Constraint

    def matches(
        self,
        request: tuple[EntityUid, EntityUid, EntityUid],
        lineages: tuple[Set[EntityUid], Set[EntityUid], Set[EntityUid]],
    ) -> bool:
        """Whether all three constraints pass for a request (principal, action, resource)."""
        return (
            self.principal.matches(request[0], lineages[0])
            and self.action.matches(request[1], lineages[1])
            and self.resource.matches(request[2], lineages[2])
        )


UNSCOPED = PolicyScope(ANY, ANY, ANY)


def read_scope(est: Mapping[str, Any], slots: Mapping[str, EntityUid]) -> PolicyScope:
    """The scope of a policy in Cedar's JSON form; ``slots`` fills a linked template's slots.

    A constraint of a shape not recognised here reads as ``All``: the policy is then selected
    for more requests than it applies to, which never changes an answer (Cedar checks the
    scope again), where a constraint read too narrowly would drop a policy that applies.
    """
    return PolicyScope(
        _constraint(est.get("principal"), slots),
        _constraint(est.get("action"), slots),
        _constraint(est.get("resource"), slots),
    )


def _constraint(node: Any, slots: Mapping[str, EntityUid]) -> Constraint:
    if not isinstance(node, dict):
        return ANY
    op = node.get("op")
    if op == "==" or op == "in":
        kind = Op.EQ if op == "==" else Op.IN
        if isinstance(node.get("entities"), list):
            uids = [_uid(item, slots) for item in node["entities"]]
            if kind is Op.IN and all(u is not None for u in uids):
                return Constraint(Op.IN, tuple(u for u in uids if u is not None))
            return ANY
        uid = _uid(node, slots)
        return Constraint(kind, (uid,)) if uid is not None else ANY
    if op == "is" and isinstance(node.get("entity_type"), str):
        if "in" not in node:
            return Constraint(Op.IS, type=node["entity_type"])
        uid = _uid(node["in"], slots)
        return Constraint(Op.IS_IN, (uid,), node["entity_type"]) if uid is not None else ANY
    return ANY


def _uid(node: Any, slots: Mapping[str, EntityUid]) -> EntityUid | None:
    """The uid a constraint names: ``{"entity": uid}``, ``{"slot": ...}`` or a bare uid (an
    item of an action list)."""
    if not isinstance(node, dict):
        return None
    if "slot" in node:
        slot = node["slot"]
        return slots.get(slot) if isinstance(slot, str) else None
    return parse_uid(node.get("entity", node))
