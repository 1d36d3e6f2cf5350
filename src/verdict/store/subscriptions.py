"""Where the invalidation listener subscribes: one node's client per node, and what it publishes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis


def _everything(_: str) -> bool:
    return True


@dataclass(frozen=True)
class Node:
    """A client of one node to subscribe on, and which stores' writes that node publishes.

    A node's own publishes reach its subscribers in order with its pongs; one forwarded from
    another node (the cluster bus) comes with no such order, and may even have been lost on
    the bus while a later one arrives. A forwarded message therefore only drops entries; the
    store's own master's copy is what settles a version.
    """

    client: aioredis.Redis
    publishes: Callable[[str], bool] = _everything


class Subscriptions(Protocol):
    """The nodes the listener subscribes on: the one Redis, or every master of a cluster."""

    # A cluster loses one node while the others keep taking writes: the cache stops at once.
    stale_on_loss: bool

    async def connect(self) -> list[Node]:
        """Fresh clients, one per node whose own publishes the pongs must cover."""

    async def unchanged(self) -> bool:
        """Whether the nodes last connected are still the ones to hear (raises when unknown)."""

    async def close(self) -> None:
        """Release what ``unchanged`` keeps open."""


class SingleNode:
    """One Redis: every write publishes on it, so its pongs prove everything."""

    stale_on_loss = False

    def __init__(self, connect: Callable[[], aioredis.Redis]) -> None:
        self._connect = connect

    async def connect(self) -> list[Node]:
        return [Node(self._connect())]

    async def unchanged(self) -> bool:
        return True

    async def close(self) -> None:
        return None
