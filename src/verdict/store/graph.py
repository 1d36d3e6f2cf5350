"""Walk the entity graph from a request's roots to the complete slice its policies can reach."""

from __future__ import annotations

from collections.abc import Callable, Collection

from verdict.model import EntityUid, JsonObject
from verdict.store.base import EntitySlice, StoredEntity

DEFAULT_MAX_SLICE = 1_000  # as Settings.max_slice_entities


class SliceTooLargeError(OverflowError):
    """A slice holds more entities than allowed."""


def collect_slice(
    roots: Collection[EntityUid],
    lookup: Callable[[EntityUid], StoredEntity | None],
    max_entities: int = DEFAULT_MAX_SLICE,
) -> EntitySlice:
    """Breadth-first closure over parents and attribute references, each uid read once;
    SliceTooLargeError as soon as more than ``max_entities`` are found."""
    found: dict[EntityUid, JsonObject] = {}
    missing: set[EntityUid] = set()
    seen = set(roots)
    frontier = list(seen)
    while frontier:
        uid = frontier.pop()
        entity = lookup(uid)
        if entity is None:
            missing.add(uid)
            continue
        found[uid] = entity.json
        if len(found) > max_entities:
            raise SliceTooLargeError("entity slice exceeds the configured maximum")
        for ref in entity.refs - seen:
            seen.add(ref)
            frontier.append(ref)
    return EntitySlice(entities=found, missing=frozenset(missing))
