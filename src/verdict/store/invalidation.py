"""Listen for other replicas' writes on Redis pub/sub and drop the cache entries they changed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from verdict.store.entity_cache import EntityCache
from verdict.store.redis_keys import INVALIDATION_PATTERN, key_uid, store_of_channel
from verdict.telemetry import metrics

log = structlog.get_logger(__name__)


class InvalidationListener:
    """Keeps ``cache`` subscribed: resubscribes (emptying the cache) after any loss.

    Silence is treated as loss: the listener pings every ``ping_interval`` and gives up on a
    connection that has not answered for three intervals, so a half-open TCP connection cannot
    keep stale entries trusted beyond the cache's grace.
    """

    def __init__(
        self, connect: Callable[[], aioredis.Redis], cache: EntityCache, ping_interval: float = 0.5
    ) -> None:
        self._connect = connect
        self._cache = cache
        self._ping_interval = ping_interval
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        """Run in the background until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="verdict-invalidation")

    async def stop(self) -> None:
        """Cancel the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means messages may be lost
                if self.subscribed.is_set():
                    log.warning("invalidation_lost", error_type=type(exc).__name__)
                self.subscribed.clear()
                self._cache.unsubscribed()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    async def _listen(self) -> None:
        client = self._connect()
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(INVALIDATION_PATTERN)
            last_heard = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=self._ping_interval)
                now = time.monotonic()
                if message is None:
                    if now - last_heard > 3 * self._ping_interval:
                        raise TimeoutError("invalidation channel silent")
                    await pubsub.ping()
                    continue
                last_heard = now
                if message["type"] == "psubscribe":
                    self._cache.subscribed()
                    self.subscribed.set()
                    log.info("invalidation_subscribed")
                elif message["type"] == "pmessage":
                    self._apply(message["channel"], message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    def _apply(self, channel: str, data: str) -> None:
        metrics.INVALIDATIONS.inc()
        version, *keys = data.split("\n")
        try:
            uids = [key_uid(key) for key in keys if key]
            self._cache.invalidate(store_of_channel(channel), int(version), uids)
        except ValueError:
            # An unreadable message may have named anything: trust nothing cached.
            log.error("invalidation_unreadable")
            self._cache.subscribed()
