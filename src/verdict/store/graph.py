"""Walk the entity graph from a request's roots to the complete slice its policies can reach."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from verdict.model import EntityUid, JsonObject
from verdict.store.base import DEFAULT_SLICE_LIMITS, EntitySlice, SliceLimits, StoredEntity
from verdict.store.weight import Weight

SLICE_TOO_LARGE = "entity slice exceeds the configured maximum"


class SliceTooLargeError(OverflowError):
    """A slice holds more entities, bytes or values than allowed."""


def collect_slice(
    roots: Collection[EntityUid],
    lookup: Callable[[EntityUid], StoredEntity | None],
    limits: SliceLimits = DEFAULT_SLICE_LIMITS,
) -> EntitySlice:
    """Breadth-first closure over parents and attribute references, each uid read once;
    SliceTooLargeError as soon as the entities found exceed a limit (count, bytes, values),
    summing the weights stored with them (nothing is serialised here)."""
    found: dict[EntityUid, JsonObject] = {}
    weights: dict[EntityUid, Weight] = {}
    missing: set[EntityUid] = set()
    size = values = 0
    seen = set(roots)
    frontier = list(seen)
    while frontier:
        uid = frontier.pop()
        entity = lookup(uid)
        if entity is None:
            missing.add(uid)
            continue
        found[uid] = entity.json
        weights[uid] = weight = entity.weight
        size += weight.bytes
        values += weight.values
        over = size > limits.max_bytes or values > limits.max_values
        if over or len(found) > limits.max_entities:
            raise SliceTooLargeError(SLICE_TOO_LARGE)
        for ref in entity.refs - seen:
            seen.add(ref)
            frontier.append(ref)
    return EntitySlice(entities=found, missing=frozenset(missing), weights=weights)


def ancestry(
    roots: Iterable[EntityUid], lookup: Callable[[EntityUid], StoredEntity | None]
) -> dict[EntityUid, tuple[EntityUid, ...]]:
    """The direct parents of every stored root and of all their ancestors (iteratively; a
    cycle ends where it meets an entity already seen)."""
    found: dict[EntityUid, tuple[EntityUid, ...]] = {}
    stack = list(roots)
    while stack:
        uid = stack.pop()
        if uid in found:
            continue
        stored = lookup(uid)
        if stored is None:
            continue
        parents = stored.parents
        found[uid] = parents
        stack.extend(parents)
    return found
