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
    """A subscribed cache holding ``slice_at(5)``, settled by a pong sent after the read."""
    cache = EntityCache(max_entries, grace_seconds=3, clock=clock)
    cache.subscribed()
    cache.fill("s", slice_at(5), cache.begin_read("s"))
    cache.heard(clock.now)
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
    cache.fill("s", slice_at(1), cache.begin_read("s"))
    assert len(cache) == 0
    assert cache.lookup("s", {USER}) is None


def test_a_read_answers_only_once_a_later_pong_or_message_settles_it() -> None:
    """Entries read at version r answer only after a ping sent after the read was answered,
    or after the invalidation for r was applied."""
    clock = Clock()
    cache = EntityCache(100, 3, clock=clock)
    cache.subscribed()
    sent_before = clock.now
    clock.now += 0.01
    cache.fill("s", slice_at(5), cache.begin_read("s"))
    assert cache.settle_wanted.is_set()
    assert cache.lookup("s", {USER}) is None
    cache.heard(sent_before)  # a ping sent before the read proves nothing about it
    assert cache.lookup("s", {USER}) is None
    cache.invalidate("s", 5, [])
    assert cache.lookup("s", {USER}) is not None


def test_invalidation_drops_entries_and_blocks_older_fills() -> None:
    """A write's invalidation removes its uids; a read older than that write is not cached."""
    clock = Clock()
    cache = filled(clock)
    token = cache.begin_read("s")  # a read that started before the write below
    cache.invalidate("s", 7, [GROUP])
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(6), token)
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(7), cache.begin_read("s"))
    assert cache.lookup("s", {USER}) is not None
    assert cache.version("s") == 7


def test_a_write_message_keeps_entries_read_at_or_after_the_write() -> None:
    """A process that wrote at 7 and re-read at 7 keeps that entry when the write's own
    message arrives afterwards (it already shows the write); entries read before 7, and
    known-missing uids read before 7, are dropped by it."""
    clock = Clock()
    cache = filled(clock)  # USER, GROUP and GHOST (missing) read at 5
    cache.wrote("s", 7, [GROUP])
    fresh = EntitySlice({GROUP: entity("Group", "g")}, 7, frozenset())
    cache.fill("s", fresh, cache.begin_read("s"))
    cache.invalidate("s", 7, [GROUP, USER, GHOST])
    found = cache.lookup("s", {GROUP})
    assert found is not None
    assert set(found.entities) == {GROUP}
    assert cache.lookup("s", {USER}) is None  # read at 5: dropped by the write at 7
    assert cache.lookup("s", {GHOST}) is None


def test_own_writes_drop_entries_without_claiming_a_version() -> None:
    """This process's write drops its uids at once but settles nothing: another replica's
    earlier write may still be in flight."""
    cache = filled(Clock())
    cache.wrote("s", 9, [GROUP])
    assert cache.lookup("s", {USER}) is None
    assert cache.version("s") == 5


def test_grace_counts_from_the_last_pong() -> None:
    """Without a pong the cache serves for the grace period from the last one heard, then
    never; losing the channel does not extend it."""
    clock = Clock()
    cache = filled(clock)
    clock.now += 2.9
    assert cache.lookup("s", {USER}) is not None
    cache.unsubscribed()
    clock.now += 0.2
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(9), cache.begin_read("s"))
    assert cache.lookup("s", {USER}) is None
    cache.heard(clock.now)
    assert cache.lookup("s", {USER}) is not None


def test_a_stale_loss_stops_answers_at_once() -> None:
    """A cluster listener that lost a node says so: entries stop answering at once, not when
    the grace runs out, and answer again only after a new subscription settles a fill."""
    clock = Clock()
    cache = filled(clock)
    cache.unsubscribed(stale=True)
    assert not cache.usable()
    assert cache.lookup("s", {USER}) is None
    cache.subscribed(clock.now)
    cache.fill("s", slice_at(9), cache.begin_read("s"))
    cache.heard(clock.now + 0.01)
    assert cache.lookup("s", {USER}) is not None


def test_resubscribing_starts_afresh() -> None:
    """Resubscription empties the cache and discards reads begun before it."""
    clock = Clock()
    cache = filled(clock)
    token = cache.begin_read("s")
    cache.subscribed()
    assert len(cache) == 0
    cache.fill("s", slice_at(1), token)
    assert len(cache) == 0
    cache.fill("s", slice_at(1), cache.begin_read("s"))  # versions restart with a fresh Redis
    cache.heard(clock.now)
    assert cache.lookup("s", {USER}) is not None


def test_a_reset_replaces_one_store_and_may_lower_its_version() -> None:
    """A reset (bulk switch, first write after data loss) empties one store, drops its reads
    in flight, and restarts its version; other stores keep their entries."""
    clock = Clock()
    cache = filled(clock)
    cache.fill("t", slice_at(5), cache.begin_read("t"))
    cache.heard(clock.now)
    token = cache.begin_read("s")
    cache.reset("s", 2)
    assert cache.version("s") == 2
    assert cache.lookup("s", {USER}) is None
    cache.fill("s", slice_at(3), token)
    assert cache.lookup("s", {USER}) is None
    assert cache.lookup("t", {USER}) is not None


def test_size_is_bounded_and_zero_disables() -> None:
    """The least recently used entries go first; max_entries 0 turns the cache off."""
    cache = filled(Clock(), max_entries=2)
    assert len(cache) == 3  # two entities, and the known-missing uid in its own LRU
    disabled = filled(Clock(), max_entries=0)
    assert len(disabled) == 0
    assert disabled.lookup("s", {USER}) is None


def test_versions_of_an_earlier_epoch_are_never_met_from_the_cache() -> None:
    """After a reset to epoch 7, a read needing version 5 (of the replaced data) is not
    answered from the cache; versions of the new epoch are."""
    clock = Clock()
    cache = filled(clock)
    assert cache.satisfies("s", 5)
    assert cache.satisfies("s", 0)
    cache.reset("s", 7)
    assert cache.load_epoch("s") == 7
    assert not cache.satisfies("s", 5)
    assert cache.satisfies("s", 7)
    assert cache.satisfies("s", 0)
    assert not cache.satisfies("s", 8)


def test_a_newer_epoch_seen_in_a_read_forgets_the_store() -> None:
    """A slice or health check showing a newer epoch than known drops what the cache holds of
    that store (its data was replaced), and the read that showed it is not installed."""
    clock = Clock()
    cache = filled(clock)
    cache.seen_epoch("s", 3)
    token = cache.begin_read("s")
    newer = EntitySlice(slice_at(9).entities, 9, frozenset(), epoch=9)
    cache.fill("s", newer, token)
    assert len(cache) == 0
    assert cache.load_epoch("s") == 9


def test_entries_answer_only_within_the_grace_of_a_loaded_proof() -> None:
    """Pongs alone do not keep a store's entries answering: a data loss sends no invalidation,
    so the newest read that found the store loaded must be younger than the grace."""
    clock = Clock()
    cache = filled(clock)
    clock.now += 2.5
    cache.heard(clock.now)  # the channel is fine
    assert cache.lookup("s", {USER}) is not None
    clock.now += 1
    cache.heard(clock.now)
    assert cache.lookup("s", {USER}) is None  # 3.5 s since the fill proved the store loaded
    cache.proved_loaded("s", cache.begin_read("s"))  # a health check found it loaded
    assert cache.lookup("s", {USER}) is not None
