"""Tests of the local entity cache's trust rules, with a controlled clock."""

from __future__ import annotations

from tests.stores import entity
from verdict.model import EntityUid
from verdict.store.base import EntitySlice
from verdict.store.entity_cache import EntityCache

USER = EntityUid("User", "u")
GROUP = EntityUid("Group", "g")
GHOST = EntityUid("User", "ghost")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slice_at(version: int) -> EntitySlice:
    return EntitySlice(
        {USER: entity("User", "u", parents=[("Group", "g")]), GROUP: entity("Group", "g")},
        version,
        frozenset({GHOST}),
    )


def filled(clock: Clock, max_entries: int = 100) -> EntityCache:
    cache = EntityCache(max_entries, grace_seconds=3, clock=clock)
    cache.subscribed()
    cache.fill("s", slice_at(5), cache.begin_read())
    return cache


def test_a_filled_closure_answers_including_known_missing_uids() -> None:
    """Cached entities, their references and cached absences answer without the store."""
    cache = filled(Clock())
    found = cache.lookup("s", {USER, GHOST})
    assert found is not None
    assert set(found.entities) == {USER, GROUP}
    assert found.missing == {GHOST}
    assert found.version == 5
    assert cache.lookup("s", {EntityUid("User", "other")}) is None
    assert cache.lookup("other-store", {USER}) is None


def test_nothing_is_trusted_before_the_first_subscription() -> None:
    """Until invalidations can arrive, the cache neither answers nor fills."""
    cache = EntityCache(100, 3, clock=Clock())
    cache.fill("s", slice_at(1), cache.begin_read())
    assert len(cache) == 0
    assert cache.lookup("s", {USER}) is None


def test_invalidation_drops_entries_and_blocks_older_fills() -> None:
    """A write's invalidation removes its uids; a read older than that write is not cached."""
    cache = filled(Clock())
    token = cache.begin_read()  # a read that started before the write below
    cache.invalidate("s", 7, [GROUP])
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(6), token)
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(7), cache.begin_read())
    assert cache.lookup("s", {USER}) is not None
    assert cache.version("s") == 7


def test_grace_after_losing_the_subscription() -> None:
    """After the channel is lost the cache serves for the grace period, then never."""
    clock = Clock()
    cache = filled(clock)
    cache.unsubscribed()
    clock.now += 2.9
    assert cache.lookup("s", {USER}) is not None
    cache.unsubscribed()  # repeated loss reports do not extend the grace
    clock.now += 0.2
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(9), cache.begin_read())
    assert cache.lookup("s", {USER}) is None


def test_resubscribing_starts_afresh() -> None:
    """Resubscription empties the cache and discards reads begun before it."""
    cache = filled(Clock())
    token = cache.begin_read()
    cache.subscribed()
    assert len(cache) == 0
    cache.fill("s", slice_at(1), token)
    assert len(cache) == 0
    cache.fill("s", slice_at(1), cache.begin_read())  # versions restart with a fresh Redis
    assert cache.lookup("s", {USER}) is not None


def test_size_is_bounded_and_zero_disables() -> None:
    """The least recently used entries go first; max_entries 0 turns the cache off."""
    cache = filled(Clock(), max_entries=2)
    assert len(cache) == 2
    disabled = filled(Clock(), max_entries=0)
    assert len(disabled) == 0
    assert disabled.lookup("s", {USER}) is None
