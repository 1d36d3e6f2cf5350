"""Listen for other replicas' writes on Redis pub/sub and drop the cache entries they changed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

from verdict.store.entity_cache import EntityCache
from verdict.store.redis_keys import DEFAULT_LAYOUT, RESET, KeyLayout, key_uid
from verdict.telemetry import metrics

log = structlog.get_logger(__name__)
Message = dict[str, Any] | None


class InvalidationListener:
    """Keeps ``cache`` subscribed and its freshness proven; resubscribes after any loss.

    The listener pings every ``ping_interval`` (and at once when a fill waits to settle); each
    pong tells the cache when the ping was sent (see entity_cache). A ping unanswered for three
    intervals means the connection is lost, but only after whatever the socket already holds
    has been read and applied: a stalled event loop finds its messages queued, not lost.
    """

    def __init__(
        self,
        connect: Callable[[], aioredis.Redis],
        cache: EntityCache,
        layout: KeyLayout = DEFAULT_LAYOUT,
        ping_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._cache = cache
        self._layout = layout
        self._ping_interval = ping_interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._pings: dict[str, float] = {}  # outstanding: ping payload -> time sent
        self._sequence = 0
        self._subscribe_sent = 0.0
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
        reader: asyncio.Task[Message] | None = None
        self._pings.clear()
        try:
            self._subscribe_sent = self._clock()
            await pubsub.psubscribe(self._layout.pattern)
            next_ping = self._subscribe_sent + self._ping_interval
            while True:
                now = self._clock()
                # A fill waiting to settle gets a ping at once, one outstanding at a time.
                nudged = self._cache.settle_wanted.is_set() and not self._pings
                if now >= next_ping or nudged:
                    self._cache.settle_wanted.clear()
                    await self._ping(pubsub, now)
                    next_ping = now + self._ping_interval
                if reader is None:
                    reader = asyncio.ensure_future(pubsub.get_message(timeout=None))
                if await self._wait(reader, next_ping - self._clock(), not self._pings):
                    self._handle(reader.result())
                    reader = None
                elif self._overdue() and not await self._wait(reader, self._ping_interval, False):
                    # Nothing arrived even now: the connection is gone, not merely late.
                    raise TimeoutError("invalidation channel silent")
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _wait(self, reader: asyncio.Task[Message], seconds: float, nudge: bool) -> bool:
        """Whether ``reader`` finished within ``seconds`` (or early, when a fill wants a ping)."""
        waiters: set[asyncio.Future[Any]] = {reader}
        wanted = asyncio.ensure_future(self._cache.settle_wanted.wait()) if nudge else None
        if wanted is not None:
            waiters.add(wanted)
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when="FIRST_COMPLETED")
        finally:
            if wanted is not None:
                wanted.cancel()
        return reader.done()

    async def _ping(self, pubsub: Any, now: float) -> None:
        self._sequence += 1
        payload = str(self._sequence)
        self._pings[payload] = now
        await pubsub.ping(payload)

    def _overdue(self) -> bool:
        """Whether the oldest unanswered ping has waited three intervals."""
        oldest = min(self._pings.values(), default=None)
        return oldest is not None and self._clock() - oldest > 3 * self._ping_interval

    def _handle(self, message: Message) -> None:
        if message is None:
            return
        kind = message["type"]
        if kind == "pmessage":
            self._apply(_text(message["channel"]), _text(message["data"]))
        elif kind == "pong":
            self._pong(_text(message["data"]))
        elif kind == "psubscribe":
            self._cache.subscribed(self._subscribe_sent)
            self.subscribed.set()
            log.info("invalidation_subscribed")

    def _pong(self, payload: str) -> None:
        sent_at = self._pings.pop(payload, None)
        if sent_at is None:
            return
        # Pongs come back in order: every earlier ping has been answered too.
        self._pings = {p: t for p, t in self._pings.items() if t > sent_at}
        self._cache.heard(sent_at)

    def _apply(self, channel: str, data: str) -> None:
        metrics.INVALIDATIONS.inc()
        store_id = self._layout.store_of_channel(channel)
        if store_id is None:
            return
        version, *keys = data.split("\n")
        try:
            if RESET in keys:
                self._cache.reset(store_id, int(version))
                return
            uids = [key_uid(key) for key in keys if key]
            self._cache.invalidate(store_id, int(version), uids)
        except ValueError:
            # An unreadable message may have named anything: trust nothing cached.
            log.error("invalidation_unreadable")
            self._cache.forget_all()


def _text(value: bytes | str) -> str:
    """Pub/sub replies arrive as bytes; an undecodable one names nothing we know."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
