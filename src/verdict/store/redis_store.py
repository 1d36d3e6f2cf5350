"""The Redis entity store: cached reads, one-round-trip slices, atomic versioned writes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import NoReturn, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.typing import EncodableT

from verdict.errors import (
    EntityDataError,
    ReplacedVersionError,
    StaleReadError,
    StoreConnectError,
    StoreNotLoadedError,
    StoreRefusedError,
    StoreUnavailableError,
    WriteConflictError,
    WriteOutcomeUnknownError,
)
from verdict.model import EntityUid, JsonObject
from verdict.store import redis_scripts
from verdict.store.base import (
    DEFAULT_READ,
    DEFAULT_SLICE_LIMITS,
    EntitySlice,
    ReadOptions,
    SliceLimits,
    StoredEntity,
)
from verdict.store.entity_cache import EntityCache
from verdict.store.graph import SLICE_TOO_LARGE
from verdict.store.redis_decode import (
    StaleReferences,
    corrupt,
    decode_key,
    decode_slice,
    decode_value,
)
from verdict.store.redis_encode import flag, put_args, staged_fields
from verdict.store.redis_failures import connect_failure
from verdict.store.redis_keys import DEFAULT_LAYOUT, EPOCH_FIELD, KeyLayout, StoreKeys, uid_key
from verdict.store.slice_handles import SliceHandles
from verdict.telemetry import lazy_log, metrics

log = lazy_log.get_logger(__name__)

# Bound once: labels() costs a lock and a dict lookup on the decision hot path.
_CACHE_HIT = metrics.CACHE_LOOKUPS.labels(result="hit")
_CACHE_MISS = metrics.CACHE_LOOKUPS.labels(result="miss")
T = TypeVar("T")
RedisClient = aioredis.Redis | aioredis.RedisCluster
_RETRYABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,  # no node could be asked for the slots
    OSError,
    TimeoutError,
)
_CORRUPT = re.compile(r"VERDICT_CORRUPT (\w+)")
_MOVED = re.compile(r"VERDICT_VERSION_MOVED (\d+)")
STAGING_TTL_MS = 3_600_000  # an abandoned bulk load's staging keys vanish after an hour


# Replies by which Redis says it did not run the command: a write may be sent again.
_NOT_RUN = (
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


class RedisEntityStore:
    """Entities in Redis with an invalidated local cache in front (see entity_cache)."""

    def __init__(
        self,
        client: RedisClient,
        cache: EntityCache,
        *,
        layout: KeyLayout = DEFAULT_LAYOUT,
        op_timeout: float = 0.5,
        retries: int = 2,
        limits: SliceLimits = DEFAULT_SLICE_LIMITS,
        slice_handles: SliceHandles | None = None,
    ) -> None:
        self._client = client
        self.cache = cache
        # Parsed handles of hot cached slices; disabled (0 entries) unless given.
        self.slice_handles = SliceHandles(0, 0) if slice_handles is None else slice_handles
        self.layout = layout
        self._op_timeout = op_timeout
        self._retries = retries
        self._limits = limits
        self._slice = client.register_script(redis_scripts.SLICE)
        self._put = client.register_script(redis_scripts.PUT)
        self._delete = client.register_script(redis_scripts.DELETE)
        self._get = client.register_script(redis_scripts.GET)
        self._switch = client.register_script(redis_scripts.SWITCH)
        self._mark = client.register_script(redis_scripts.MARK)
        self._state = client.register_script(redis_scripts.STATE)
        self._repair = client.register_script(redis_scripts.REPAIR_REFS)
        self._unloaded: set[str] = set()  # stores last found without their marker
        # Per bulk load under way (by token): the uid-keys its staging made so far.
        self._staged_keys: dict[str, dict[EntityUid, str]] = {}
        self.round_trips = 0  # Redis calls made (cache misses and writes), for tests and benches

    @property
    def call_seconds(self) -> float:
        """The longest one call may take before it fails: each attempt's timeout, and the
        pauses between them."""
        return (self._retries + 1) * self._op_timeout + 0.1 * self._retries

    async def prepare(self) -> None:
        """Load the scripts now, so the first decision costs one round trip, not three."""
        scripts = (
            self._slice,
            self._put,
            self._delete,
            self._get,
            self._switch,
            self._mark,
            self._state,
            self._repair,
        )
        for script in scripts:
            await self._call(partial(self._client.script_load, script.script), "", None)
        await self._check_lineage()

    async def _check_lineage(self) -> None:
        """Warn once at start when this Redis user may not run INFO: the scripts then record
        no replication id, so a write lost with a master (a promoted replica, a restart
        without persistence) starts no new epoch and a later version can vouch for it
        (docs/redis.md, "Writes lost with their master")."""
        try:
            await asyncio.wait_for(self._client.info("replication"), self._op_timeout)
        except redis.exceptions.NoPermissionError:
            log.warning(
                "redis_lineage_off",
                detail="the Redis user may not run INFO: lost writes after a failover go "
                "unnoticed; grant +info (docs/redis.md)",
            )
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            pass  # reachability is the health monitor's to report, not this check's

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        """From cache when every reachable uid is cached and settled, else one script call.

        Raises StoreNotLoadedError for a store that was never loaded (or lost its data), unless
        ``options.require_loaded`` is false (a write checking stored ancestors; what such a read
        finds in a store that is not loaded is never cached). Raises ReplacedVersionError for a
        ``min_version`` of an earlier epoch: the data it names was replaced.

        With ``options.prepared``, a cache hit comes with the parsed handle of its entries.
        """
        if self.cache.satisfies(store_id, options.min_version):
            if options.prepared:
                cached = self.slice_handles.lookup(self.cache, store_id, roots, options.schema)
            else:
                cached = self.cache.lookup(store_id, roots)
            if cached is not None:
                _CACHE_HIT.inc()
                return cached
        _CACHE_MISS.inc()
        token = self.cache.begin_read(store_id)
        keys = self._keys(store_id)
        limits = self._limits
        args: list[str | int] = [
            limits.max_entities,
            "1" if options.require_loaded else "0",
            limits.max_bytes,
            limits.max_values,
            *(uid_key(uid) for uid in roots),
        ]
        entity_slice = await self._read_slice(store_id, keys, args, options.deadline)
        if 0 < options.min_version < entity_slice.epoch:
            raise ReplacedVersionError(options.min_version, entity_slice.epoch)
        if entity_slice.version < options.min_version:
            raise StaleReadError(options.min_version, entity_slice.version)
        if entity_slice.epoch:
            self.cache.fill(store_id, entity_slice, token)
        return entity_slice

    async def _read_slice(
        self, store_id: str, keys: StoreKeys, args: list[str | int], deadline: float | None
    ) -> EntitySlice:
        """One SLICE script call, decoded. Reference lists found stale (written before a
        reference spelling was counted) are repaired and the slice read again, once; still
        stale, the decision fails closed (``stale_refs``)."""
        read = partial(self._slice, keys=keys.all, args=args)
        try:
            return decode_slice(store_id, await self._call(read, store_id, deadline))
        except StaleReferences as stale:
            triples = [part for triple in stale.lists for part in triple]
        repair = partial(self._repair, keys=keys.all, args=triples)
        grown = await self._call(repair, store_id, deadline)
        log.warning("entity_refs_repaired", store=store_id, lists=int(grown))
        try:
            return decode_slice(store_id, await self._call(read, store_id, deadline))
        except StaleReferences:
            return corrupt(store_id, "stale_refs")

    async def put(
        self,
        store_id: str,
        entities: Sequence[StoredEntity],
        expected_version: int | None = None,
        *,
        require_loaded: bool = False,
    ) -> int:
        """Upsert atomically; returns the new version. Other replicas are told via pub/sub.

        With ``expected_version``, the script writes only if the store is still at it, else
        WriteConflictError (another replica wrote since this write read its ancestors). A store
        that is not loaded is refused with ``require_loaded``, else this write loads it.
        """
        keys = self._keys(store_id)
        args = put_args(keys, entities, require_loaded, expected_version)
        version = int(
            await self._call(lambda: self._put(keys=keys.all, args=args), store_id, write=True)
        )
        self.cache.wrote(store_id, version, [e.uid for e in entities])
        return version

    async def delete(
        self, store_id: str, uids: Collection[EntityUid], *, require_loaded: bool = False
    ) -> tuple[int, int]:
        """Delete atomically; returns (new version, number deleted)."""
        keys = self._keys(store_id)
        args = [keys.channel, flag(require_loaded), *(uid_key(uid) for uid in uids)]
        version, deleted = await self._call(
            lambda: self._delete(keys=keys.all, args=args), store_id, write=True
        )
        self.cache.wrote(store_id, int(version), uids)
        return int(version), int(deleted)

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Exactly the named entities, read from Redis (not the cache)."""
        keys = self._keys(store_id)
        args = [uid_key(uid) for uid in uids]
        version, values = await self._call(
            lambda: self._get(keys=keys.all, args=args),
            store_id,
        )
        found = {
            uid: decode_value(store_id, uid, value)
            for uid, value in zip(uids, values, strict=True)
            if value is not None
        }
        return found, int(version)

    async def export(self, store_id: str) -> list[JsonObject]:
        """Every entity of a loaded store, sorted by uid; HSCAN keeps Redis responsive meanwhile."""
        if not await self.ready(store_id):
            raise StoreNotLoadedError(store_id)
        keys = self._keys(store_id)
        entities: dict[EntityUid, JsonObject] = {}
        async for key, value in self._client.hscan_iter(keys.entities, count=1000):
            if key == EPOCH_FIELD:
                continue
            uid = decode_key(store_id, key)
            entities[uid] = decode_value(store_id, uid, value)
        return [entities[uid] for uid in sorted(entities, key=lambda u: (u.type, u.id))]

    async def ready(self, store_id: str, deadline: float | None = None) -> bool:
        """Whether the store is loaded (marker and data agree on the epoch, the version is
        sound); StoreUnavailableError if Redis is unreachable.

        A store found not loaded is forgotten by the local cache too: whatever it holds came
        from data Redis no longer has. So is one found in a newer epoch than the cache knows.
        """
        keys = self._keys(store_id)
        token = self.cache.begin_read(store_id)
        try:
            reply = await self._call(lambda: self._state(keys=keys.all), store_id, deadline)
        except EntityDataError:  # a key of the wrong type: this store is unusable, not Redis
            reply = ["wrong_type", 0]
        state, epoch = str(reply[0]), int(reply[1])
        if state != "ok":
            if state not in ("absent", "wrong_type"):  # wrong_type was counted already
                metrics.CORRUPT_ENTITIES.labels(reason=state).inc()
            if store_id not in self._unloaded:  # nothing is cached while it stays unloaded
                self._unloaded.add(store_id)
                self.cache.forget(store_id)
            return False
        self._unloaded.discard(store_id)
        self.cache.seen_epoch(store_id, epoch)
        self.cache.proved_loaded(store_id, token)
        return True

    async def mark_loaded(self, store_id: str) -> bool:
        """Declare the store's data complete as it is, if not yet loaded; True if newly marked."""
        keys = self._keys(store_id)
        marked = await self._call(
            lambda: self._mark(keys=keys.all, args=[keys.channel]), store_id, write=True
        )
        return bool(int(marked))

    async def stage(
        self, store_id: str, token: str, batches: Sequence[Sequence[StoredEntity]]
    ) -> None:
        """Add entities to the bulk load ``token`` (invisible to readers until ``switch``)."""
        entities_key, refs_key = self._keys(store_id).staging(token)
        client = self._client
        made = self._staged_keys.setdefault(token, {})

        async def send() -> None:
            # MULTI/EXEC: the writes and the expiries apply together or not at all. Without
            # it, a load stopped mid round trip left hashes whose PEXPIRE never arrived, kept
            # for good (attack round 24). The staging keys share the store's slot.
            async with client.pipeline(transaction=True) as pipe:
                for batch in batches:
                    values, refs = staged_fields(batch, made)
                    pipe.hset(entities_key, mapping=values)
                    pipe.hset(refs_key, mapping=refs)
                pipe.pexpire(entities_key, STAGING_TTL_MS)
                pipe.pexpire(refs_key, STAGING_TTL_MS)
                await pipe.execute()

        await self._call(send, store_id)

    async def switch(self, store_id: str, token: str, count: int) -> int:
        """Make the bulk load ``token`` (``count`` entities) the store's data in one step."""
        self._staged_keys.pop(token, None)
        keys = self._keys(store_id)
        all_keys = [*keys.all, *keys.staging(token)]
        args: list[EncodableT] = [keys.channel, count]
        version = int(
            await self._call(lambda: self._switch(keys=all_keys, args=args), store_id, write=True)
        )
        # Forget now; the version is settled by the switch's own message, in order.
        self.cache.forget(store_id)
        return version

    async def discard(self, store_id: str, token: str) -> None:
        """Drop the staging keys of an abandoned bulk load."""
        self._staged_keys.pop(token, None)
        staged = self._keys(store_id).staging(token)
        await self._call(lambda: self._client.unlink(*staged), store_id)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _keys(self, store_id: str) -> StoreKeys:
        return self.layout.store(store_id)

    async def _call(
        self,
        operation: Callable[[], Awaitable[T]],
        store_id: str,
        deadline: float | None = None,
        *,
        write: bool = False,
    ) -> T:
        """Run one Redis operation within the caller's deadline, retrying transient failures.

        With a deadline, an attempt may use all of it (waiting for a pooled connection in a
        burst included); a stalled Redis is still cut off by the socket timeout. A ``write``
        whose attempts all failed, one of which may have reached Redis (anything but a refused
        connection or a reply saying it did not run), ends in WriteOutcomeUnknownError: Redis
        runs what it received once it is free (the same content again is harmless: a retry
        that succeeds is answered OK, as the write is then in force).
        """
        failed: str | None = None  # why the last attempt could not connect, if it could not
        sent = False
        for attempt in range(self._retries + 1):
            budget = self._op_timeout if deadline is None else deadline - time.monotonic()
            if budget <= 0:
                break
            self.round_trips += 1
            try:
                async with asyncio.timeout(budget):
                    return await operation()
            except (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError):
                # Redis refuses writes (maxmemory with noeviction, a read-only replica).
                if sent:  # ... this one; an earlier attempt may still run
                    raise WriteOutcomeUnknownError() from None
                raise StoreUnavailableError("redis refused the write") from None
            except redis.exceptions.ResponseError as exc:
                self._script_failed(store_id, str(exc))
            except (*_RETRYABLE, TimeoutError) as exc:
                metrics.STORE_ERRORS.labels(kind=type(exc).__name__).inc()
                failed = connect_failure(exc)
                sent = sent or not (failed or isinstance(exc, _NOT_RUN))
                if isinstance(exc, TimeoutError) and not isinstance(exc, _RETRYABLE):
                    if write:
                        raise WriteOutcomeUnknownError() from None
                    raise  # the caller's own deadline (asyncio.timeout above): as before
                await asyncio.sleep(min(0.01 * 2**attempt, 0.1))
        if write and sent:  # an attempt may have reached Redis, which runs it once free
            raise WriteOutcomeUnknownError()
        if failed == "connection refused":  # nothing listening: not a slow Redis, a missing one
            raise StoreRefusedError()
        if failed:  # not slow either: the address, credentials or database are wrong
            raise StoreConnectError(failed)
        raise StoreUnavailableError("redis did not answer in time")

    def _script_failed(self, store_id: str, text: str) -> NoReturn:
        """Map a script's deliberate error to a domain error; anything else is re-raised."""
        if "VERDICT_NOT_LOADED" in text:
            raise StoreNotLoadedError(store_id) from None
        if "VERDICT_SLICE_TOO_LARGE" in text:
            raise EntityDataError(SLICE_TOO_LARGE) from None
        moved = _MOVED.search(text)
        if moved:
            raise WriteConflictError(int(moved[1])) from None
        reason = _CORRUPT.search(text)
        if reason:
            corrupt(store_id, reason[1])
        if "WRONGTYPE" in text:  # one of the store's keys holds another type
            corrupt(store_id, "wrong_type")
        if "VERDICT_STAGE_INCOMPLETE" in text:
            raise StoreUnavailableError("bulk load incomplete: staged entities are missing")
        raise redis.exceptions.ResponseError(text)
