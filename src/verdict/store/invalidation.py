"""Listen for other replicas' writes on Redis pub/sub (every cluster master); drop what changed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from verdict.store.entity_cache import EntityCache
from verdict.store.redis_keys import DEFAULT_LAYOUT, RESET, KeyLayout, key_uid
from verdict.store.subscriptions import Node, Subscriptions
from verdict.telemetry import metrics

log = structlog.get_logger(__name__)
Message = dict[str, Any] | None


class InvalidationListener:
    """Keeps ``cache`` subscribed and its freshness proven; resubscribes after any loss.

    It subscribes on every node of ``nodes`` and pings each every ``ping_interval`` (and at once
    when a fill waits to settle). A pong proves only what its own node published before the
    ping, so the cache hears the oldest ping that every node has answered (see entity_cache).
    A ping unanswered for three intervals means the connection is lost, but only after whatever
    the socket already holds has been read and applied: a stalled event loop finds its messages
    queued, not lost. Any node lost, or (cluster) a change of masters, resubscribes everywhere.
    """

    def __init__(
        self,
        nodes: Subscriptions,
        cache: EntityCache,
        layout: KeyLayout = DEFAULT_LAYOUT,
        ping_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes = nodes
        self.cache = cache
        self.layout = layout
        self.ping_interval = ping_interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._proofs: list[float | None] = []  # per node: send time of its newest proof
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
        with contextlib.suppress(Exception):
            await self._nodes.close()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means messages may be lost
                if isinstance(exc, ExceptionGroup):
                    exc = exc.exceptions[0]
                if self.subscribed.is_set():
                    log.warning("invalidation_lost", error_type=type(exc).__name__)
                self.subscribed.clear()
                self.cache.unsubscribed(stale=self._nodes.stale_on_loss)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    async def _listen(self) -> None:
        nodes = await self._nodes.connect()
        self._proofs = [None] * len(nodes)
        channels = [_Channel(self, index, node) for index, node in enumerate(nodes)]
        try:
            # The first failure of any task cancels the others and ends the subscription.
            async with asyncio.TaskGroup() as group:
                for channel in channels:
                    group.create_task(channel.run())
                group.create_task(self._fan_out(channels))
                if self._nodes.stale_on_loss:
                    group.create_task(self._watch())
        finally:
            for node in nodes:
                with contextlib.suppress(Exception):
                    await node.client.aclose()

    async def _fan_out(self, channels: list[_Channel]) -> None:
        """A fill waiting to settle wants a ping from every node."""
        wanted = self.cache.settle_wanted
        while True:
            await wanted.wait()
            wanted.clear()
            for channel in channels:
                channel.nudge.set()

    async def _watch(self) -> None:
        """A cluster whose masters changed (a failover, a reshard) is subscribed afresh."""
        while True:
            await asyncio.sleep(self.ping_interval)
            if not await self._nodes.unchanged():
                raise ConnectionError("cluster masters changed")

    def on_subscribed(self, index: int, sent_at: float) -> None:
        """Node ``index`` confirmed the subscription asked for at ``sent_at``."""
        self._proofs[index] = sent_at
        if not self.subscribed.is_set() and None not in self._proofs:
            self.cache.subscribed(min(p for p in self._proofs if p is not None))
            self.subscribed.set()
            log.info("invalidation_subscribed", nodes=len(self._proofs))

    def on_heard(self, index: int, sent_at: float) -> None:
        """Node ``index`` answered a ping sent at ``sent_at``."""
        proof = self._proofs[index]
        self._proofs[index] = sent_at if proof is None else max(proof, sent_at)
        if self.subscribed.is_set():
            self.cache.heard(min(p for p in self._proofs if p is not None))

    def apply(self, channel: str, data: str, publishes: Callable[[str], bool]) -> None:
        """Apply one invalidation message; a copy forwarded from another node only drops
        entries (any repeat of a message changes nothing more)."""
        metrics.INVALIDATIONS.inc()
        store_id = self.layout.store_of_channel(channel)
        if store_id is None:
            return
        version, *keys = data.split("\n")
        try:
            own = publishes(store_id)
            if RESET in keys:
                if own:
                    self.cache.reset(store_id, int(version))
                else:
                    self.cache.forget(store_id)
                return
            uids = [key_uid(key) for key in keys if key]
            if own:
                self.cache.invalidate(store_id, int(version), uids)
            else:
                self.cache.wrote(store_id, int(version), uids)
        except ValueError:
            # An unreadable message may have named anything: trust nothing cached.
            log.error("invalidation_unreadable")
            self.cache.forget_all()


class _Channel:
    """One node's subscription: its messages, its pings and their pongs."""

    def __init__(self, listener: InvalidationListener, index: int, node: Node) -> None:
        self._listener = listener
        self._index = index
        self._node = node
        self._pings: dict[str, float] = {}  # outstanding: ping payload -> time sent
        self._sequence = 0
        self._subscribe_sent = 0.0
        self.nudge = asyncio.Event()

    async def run(self) -> None:
        listener = self._listener
        clock, interval = listener.clock, listener.ping_interval
        pubsub = self._node.client.pubsub()
        reader: asyncio.Task[Message] | None = None
        try:
            self._subscribe_sent = clock()
            await pubsub.psubscribe(listener.layout.pattern)
            next_ping = self._subscribe_sent + interval
            while True:
                now = clock()
                # A fill waiting to settle gets a ping at once, one outstanding at a time.
                nudged = self.nudge.is_set() and not self._pings
                if now >= next_ping or nudged:
                    self.nudge.clear()
                    await self._ping(pubsub, now)
                    next_ping = now + interval
                if reader is None:
                    reader = asyncio.ensure_future(pubsub.get_message(timeout=None))
                if await self._wait(reader, next_ping - clock(), not self._pings):
                    self._handle(reader.result())
                    reader = None
                elif self._overdue() and not await self._wait(reader, interval, False):
                    # Nothing arrived even now: the connection is gone, not merely late.
                    raise TimeoutError("invalidation channel silent")
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _wait(self, reader: asyncio.Task[Message], seconds: float, nudge: bool) -> bool:
        """Whether ``reader`` finished within ``seconds`` (or early, when a fill wants a ping)."""
        waiters: set[asyncio.Future[Any]] = {reader}
        wanted = asyncio.ensure_future(self.nudge.wait()) if nudge else None
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
        limit = 3 * self._listener.ping_interval
        return oldest is not None and self._listener.clock() - oldest > limit

    def _handle(self, message: Message) -> None:
        if message is None:
            return
        kind = message["type"]
        if kind == "pmessage":
            channel, data = _text(message["channel"]), _text(message["data"])
            self._listener.apply(channel, data, self._node.publishes)
        elif kind == "pong":
            self._pong(_text(message["data"]))
        elif kind == "psubscribe":
            self._listener.on_subscribed(self._index, self._subscribe_sent)

    def _pong(self, payload: str) -> None:
        sent_at = self._pings.pop(payload, None)
        if sent_at is None:
            return
        # Pongs come back in order: every earlier ping has been answered too.
        self._pings = {p: t for p, t in self._pings.items() if t > sent_at}
        self._listener.on_heard(self._index, sent_at)


def _text(value: bytes | str) -> str:
    """Pub/sub replies arrive as bytes; an undecodable one names nothing we know."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
