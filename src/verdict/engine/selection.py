"""The policies one Cedar call evaluates: the store index's selection for its requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from verdict.cedar import PolicySetHandle
from verdict.cedar_json import parse_uid
from verdict.model import AuthorizationRequest, EntityUid, JsonObject
from verdict.policy.snapshot import StoreSnapshot

# Each entity's direct parents, for at least the entities Cedar evaluates a request with.
ParentMap = Mapping[EntityUid, Sequence[EntityUid]]


def selected_policies(
    store: StoreSnapshot,
    requests: Sequence[AuthorizationRequest],
    parents: ParentMap,
) -> PolicySetHandle:
    """The policy set holding every policy whose scope can match one of ``requests``, given
    the ``parents`` of the entities Cedar evaluates them with (a slice closed under parents):
    Cedar's answer with it is exactly its answer with the whole store's set."""
    key = store.index.select([(r.principal, r.action, r.resource) for r in requests], parents)
    return store.index.policy_set(key)


def parent_map(entities: Iterable[JsonObject]) -> dict[EntityUid, list[EntityUid]]:
    """Each entity's direct parents (an entity given twice: the parents of both)."""
    found: dict[EntityUid, list[EntityUid]] = {}
    for entity in entities:
        uid = parse_uid(entity.get("uid"))
        if uid is not None:
            parents = found.setdefault(uid, [])
            parents += (p for raw in entity.get("parents", ()) if (p := parse_uid(raw)) is not None)
    return found
