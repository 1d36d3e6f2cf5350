"""The Redis entity store: cached reads, one-round-trip slices, atomic versioned writes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from verdict.cedar_json import check_entity_shape
from verdict.errors import (
    EntityDataError,
    RequestError,
    StaleReadError,
    StoreUnavailableError,
)
from verdict.model import EntityUid, JsonObject
from verdict.store import redis_scripts
from verdict.store.base import DEFAULT_READ, EntitySlice, ReadOptions, StoredEntity
from verdict.store.entity_cache import EntityCache
from verdict.store.redis_keys import StoreKeys, key_uid, uid_key
from verdict.telemetry import metrics

log = structlog.get_logger(__name__)
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
    OSError,
    TimeoutError,
)


class RedisEntityStore:
    """Entities in Redis with an invalidated local cache in front (see entity_cache)."""

    def __init__(
        self,
        client: RedisClient,
        cache: EntityCache,
        *,
        op_timeout: float = 0.5,
        retries: int = 2,
        max_slice: int = 10_000,
    ) -> None:
        self._client = client
        self.cache = cache
        self._op_timeout = op_timeout
        self._retries = retries
        self._max_slice = max_slice
        self._slice = client.register_script(redis_scripts.SLICE)
        self._put = client.register_script(redis_scripts.PUT)
        self._delete = client.register_script(redis_scripts.DELETE)
        self._get = client.register_script(redis_scripts.GET)
        self.round_trips = 0  # Redis calls made (cache misses and writes), for tests and benches

    async def prepare(self) -> None:
        """Load the scripts now, so the first decision costs one round trip, not three."""
        for script in (self._slice, self._put, self._delete, self._get):
            source = script.script
            await self._call(partial(self._client.script_load, source), None)

    async def fetch_slice(
        self, store_id: str, roots: Collection[EntityUid], options: ReadOptions = DEFAULT_READ
    ) -> EntitySlice:
        """From cache when every reachable uid is cached and fresh enough, else one script call."""
        if options.min_version <= self.cache.version(store_id):
            cached = self.cache.lookup(store_id, roots)
            if cached is not None:
                _CACHE_HIT.inc()
                return cached
        _CACHE_MISS.inc()
        token = self.cache.begin_read()
        keys = StoreKeys.of(store_id)
        args: list[str | int] = [self._max_slice, *(uid_key(uid) for uid in roots)]
        reply = await self._call(lambda: self._slice(keys=keys.all, args=args), options.deadline)
        entity_slice = self._decode_slice(store_id, reply)
        if entity_slice.version < options.min_version:
            raise StaleReadError(options.min_version, entity_slice.version)
        self.cache.fill(store_id, entity_slice, token)
        return entity_slice

    async def put(self, store_id: str, entities: Sequence[StoredEntity]) -> int:
        """Upsert atomically; returns the new version. Other replicas are told via pub/sub."""
        keys = StoreKeys.of(store_id)
        args = _put_args(keys, entities)
        version = int(await self._call(lambda: self._put(keys=keys.all, args=args), None))
        self.cache.invalidate(store_id, version, [e.uid for e in entities])
        return version

    async def put_many(self, store_id: str, batches: Sequence[Sequence[StoredEntity]]) -> list[int]:
        """Several atomic upserts in one pipeline (one round trip); returns their versions.

        Each batch is its own atomic write; a retry after a lost reply may apply a batch twice,
        which an upsert tolerates (it only costs a version number).
        """
        client = self._client
        if isinstance(client, aioredis.RedisCluster):
            # redis-py's cluster pipeline does not run scripts; send the writes concurrently.
            return list(await asyncio.gather(*(self.put(store_id, b) for b in batches)))
        keys = StoreKeys.of(store_id)
        all_args = [_put_args(keys, batch) for batch in batches]

        async def send() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for args in all_args:
                    await self._put(keys=keys.all, args=args, client=pipe)
                replies: list[Any] = await pipe.execute()
                return replies

        versions = [int(v) for v in await self._call(send, None)]
        for batch, version in zip(batches, versions, strict=True):
            self.cache.invalidate(store_id, version, [e.uid for e in batch])
        return versions

    async def delete(self, store_id: str, uids: Collection[EntityUid]) -> tuple[int, int]:
        """Delete atomically; returns (new version, number deleted)."""
        keys = StoreKeys.of(store_id)
        args = [keys.channel, *(uid_key(uid) for uid in uids)]
        version, deleted = await self._call(lambda: self._delete(keys=keys.all, args=args), None)
        self.cache.invalidate(store_id, int(version), uids)
        return int(version), int(deleted)

    async def get(
        self, store_id: str, uids: Sequence[EntityUid]
    ) -> tuple[dict[EntityUid, JsonObject], int]:
        """Exactly the named entities, read from Redis (not the cache)."""
        keys = StoreKeys.of(store_id)
        args = [uid_key(uid) for uid in uids]
        version, values = await self._call(
            lambda: self._get(keys=[keys.entities, keys.version], args=args), None
        )
        found = {
            uid: self._decode_value(store_id, uid, value)
            for uid, value in zip(uids, values, strict=True)
            if value is not None
        }
        return found, int(version)

    async def export(self, store_id: str) -> list[JsonObject]:
        """Every entity of a store, sorted by uid; HSCAN keeps Redis responsive meanwhile."""
        keys = StoreKeys.of(store_id)
        entities: dict[EntityUid, JsonObject] = {}
        async for key, value in self._client.hscan_iter(keys.entities, count=1000):
            uid = self._decode_key(store_id, key)
            entities[uid] = self._decode_value(store_id, uid, value)
        return [entities[uid] for uid in sorted(entities, key=lambda u: (u.type, u.id))]

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _call(self, operation: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        """Run one Redis operation within the deadline, retrying transient failures."""
        for attempt in range(self._retries + 1):
            remaining = self._op_timeout if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            self.round_trips += 1
            try:
                async with asyncio.timeout(min(remaining, self._op_timeout)):
                    return await operation()
            except redis.exceptions.ResponseError as exc:
                if "VERDICT_SLICE_TOO_LARGE" in str(exc):
                    raise EntityDataError("entity slice exceeds the configured maximum") from None
                raise
            except _RETRYABLE as exc:
                metrics.STORE_ERRORS.labels(kind=type(exc).__name__).inc()
                await asyncio.sleep(min(0.01 * 2**attempt, 0.1))
        raise StoreUnavailableError("redis did not answer in time")

    def _decode_slice(self, store_id: str, reply: list[Any]) -> EntitySlice:
        version, found_keys, values, missing_keys = reply
        entities: dict[EntityUid, JsonObject] = {}
        for key, value in zip(found_keys, values, strict=True):
            uid = self._decode_key(store_id, key)
            if value is None:  # refs without an entity: a torn or tampered write
                self._corrupt(store_id, "refs_without_entity")
            entities[uid] = self._decode_value(store_id, uid, value)
        missing = frozenset(self._decode_key(store_id, key) for key in missing_keys)
        return EntitySlice(entities, int(version), missing)

    def _decode_key(self, store_id: str, key: str) -> EntityUid:
        try:
            return key_uid(key)
        except ValueError:
            return self._corrupt(store_id, "bad_key")

    def _decode_value(self, store_id: str, uid: EntityUid, value: str) -> JsonObject:
        try:
            document = json.loads(value)
            entity = document["e"]
            if check_entity_shape(entity, "entity") != uid:
                self._corrupt(store_id, "uid_mismatch")
        except (ValueError, KeyError, TypeError, RequestError):
            self._corrupt(store_id, "bad_value")
        result: JsonObject = entity
        return result

    def _corrupt(self, store_id: str, reason: str) -> NoReturn:
        """Count and log (without content) unusable data, and fail this decision closed."""
        metrics.CORRUPT_ENTITIES.labels(reason=reason).inc()
        log.error("entity_data_corrupt", store=store_id, reason=reason)
        raise EntityDataError("stored entity data for this request is unreadable")


def _put_args(keys: StoreKeys, entities: Sequence[StoredEntity]) -> list[str]:
    """ARGV of the PUT script: the channel, then (uid-key, entity JSON, refs) per entity."""
    args = [keys.channel]
    for entity in entities:
        args += [
            uid_key(entity.uid),
            json.dumps(entity.json, ensure_ascii=False),
            "\n".join(sorted(uid_key(ref) for ref in entity.refs)),
        ]
    return args
