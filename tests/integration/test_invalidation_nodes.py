"""The invalidation listener on several nodes (as on every cluster master): a pong proves only
its own node's messages, and losing any node stops the cache until all are subscribed again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from tests.redis_support import SubscriberDelay, redis_server
from tests.stores import entity
from verdict.model import EntityUid
from verdict.store.base import EntitySlice
from verdict.store.entity_cache import EntityCache
from verdict.store.invalidation import InvalidationListener
from verdict.store.redis_keys import DEFAULT_LAYOUT
from verdict.store.subscriptions import Node

USER = EntityUid("User", "u")


class TwoNodes:
    """Subscriptions on two real Redis servers, the second reached through ``url_b``."""

    stale_on_loss = True

    def __init__(self, url_a: str, url_b: Callable[[], str], b_publishes: bool = True) -> None:
        self._urls = [lambda: url_a, url_b]
        self._b_publishes = b_publishes

    async def connect(self) -> list[Node]:
        a, b = (aioredis.Redis.from_url(url()) for url in self._urls)
        return [Node(a), Node(b, lambda _: self._b_publishes)]

    async def unchanged(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@asynccontextmanager
async def listening(nodes: TwoNodes, ping: float) -> AsyncIterator[InvalidationListener]:
    """A listener (cache grace 30 s) subscribed on ``nodes``, stopped after the block."""
    cache = EntityCache(100, grace_seconds=30)
    listener = InvalidationListener(nodes, cache, DEFAULT_LAYOUT, ping_interval=ping)
    listener.start()
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 10)
        yield listener
    finally:
        await listener.stop()


async def until(check: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``check`` (cache state sets no event) until it holds; fail after ``seconds``."""
    for _ in range(int(seconds / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def test_a_read_settles_only_when_every_node_has_answered(tmp_path: Path) -> None:
    """While node B's replies are held back, node A's pongs do not settle a fill, and a
    message B published is still owed; once B's replies arrive, both are applied."""
    with redis_server(tmp_path / "a") as a, redis_server(tmp_path / "b") as b:
        proxy = SubscriberDelay(b.port)
        await proxy.start()
        try:
            async with listening(TwoNodes(a.url, proxy.url), ping=1.0) as listener:
                cache = listener.cache
                proxy.hold()
                slice_ = EntitySlice({USER: entity("User", "u")}, 7)
                cache.fill("s", slice_, cache.begin_read("s"))  # wants a ping from each node
                b.cli("PUBLISH", DEFAULT_LAYOUT.store("s").channel, '9\n["User","u"]')
                await asyncio.sleep(0.3)  # A's pong arrives within this; B's is held
                assert cache.version("s") == 0
                assert cache.lookup("s", {USER}) is None
                proxy.release()
                await until(lambda: cache.version("s") == 9)
                assert cache.lookup("s", {USER}) is None  # read at 7, dropped by the write at 9
        finally:
            proxy.release()
            await proxy.stop()


async def test_losing_one_node_stops_the_cache_until_all_are_subscribed(tmp_path: Path) -> None:
    """Node B killed: the listener reports the loss and the cache stops answering at once
    (node A may still take writes); B back on its port, the listener subscribes on both."""
    with redis_server(tmp_path / "a") as a, redis_server(tmp_path / "b") as b:
        async with listening(TwoNodes(a.url, lambda: b.url), ping=0.1) as listener:
            cache = listener.cache
            cache.fill("s", EntitySlice({USER: entity("User", "u")}, 3), cache.begin_read("s"))
            await until(lambda: cache.lookup("s", {USER}) is not None)
            b.stop()
            await until(lambda: not listener.subscribed.is_set())
            assert not cache.usable()
            assert cache.lookup("s", {USER}) is None
            b.start()
            await until(listener.subscribed.is_set)
            cache.fill("s", EntitySlice({USER: entity("User", "u")}, 4), cache.begin_read("s"))
            await until(lambda: cache.lookup("s", {USER}) is not None)


async def test_a_forwarded_copy_drops_entries_but_settles_nothing(tmp_path: Path) -> None:
    """A message heard on a node that does not publish the store's writes (a copy forwarded by
    the cluster bus) drops the entries it names but settles no version: only the copy from the
    store's own node does."""
    with redis_server(tmp_path / "a") as a, redis_server(tmp_path / "b") as b:
        nodes = TwoNodes(a.url, lambda: b.url, b_publishes=False)
        async with listening(nodes, ping=0.1) as listener:
            cache = listener.cache
            cache.fill("s", EntitySlice({USER: entity("User", "u")}, 3), cache.begin_read("s"))
            await until(lambda: cache.lookup("s", {USER}) is not None)
            message = '9\n["User","u"]'
            b.cli("PUBLISH", DEFAULT_LAYOUT.store("s").channel, message)
            await until(lambda: cache.lookup("s", {USER}) is None)
            assert cache.version("s") == 3
            a.cli("PUBLISH", DEFAULT_LAYOUT.store("s").channel, message)
            await until(lambda: cache.version("s") == 9)
