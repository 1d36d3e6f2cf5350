"""Find a Redis Cluster's masters through any node still reachable, for the invalidations."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse, urlunparse

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from verdict.store.redis_keys import KeyLayout
from verdict.store.subscriptions import Node

Address = tuple[str, int]
Slots = tuple[tuple[int, int], ...]  # inclusive ranges


class ClusterNodes:
    """The nodes of one cluster, as last reported by any of them.

    The URL's node is only the first one asked: every answer replaces the list of known nodes
    (replicas included), so the cluster can still be found when the seed node is gone. Clients
    keep the URL's scheme, credentials and options (TLS files), with another host and port.
    """

    def __init__(self, url: str, connect_timeout: float) -> None:
        parsed = urlparse(url)
        self._url = parsed._replace(path="/0")
        self._connect_timeout = connect_timeout
        self._known: list[Address] = [(parsed.hostname or "127.0.0.1", parsed.port or 6379)]
        self._asking: tuple[Address, aioredis.Redis] | None = None

    @property
    def known(self) -> list[Address]:
        """Every node last reported, the seed first until a node has answered."""
        return list(self._known)

    def client(self, address: Address, socket_timeout: float | None = None) -> aioredis.Redis:
        """A single-node client of ``address``; redis-py never retries or reconnects it."""
        host, port = address
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
        userinfo, _, _ = self._url.netloc.rpartition("@")
        netloc = f"{userinfo}@{hostport}" if userinfo else hostport
        return aioredis.Redis.from_url(
            urlunparse(self._url._replace(netloc=netloc)),
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def masters(self) -> dict[Address, Slots]:
        """The masters that serve slots now, and their slots, from the first known node that
        answers.

        A master the cluster has marked failing but not yet replaced is included: until its
        replica is promoted it still owns its slots, and nothing else can accept their writes.
        Raises ConnectionError when no known node answers.
        """
        for address in self.known:
            client = await self._asker(address)
            try:
                text = await client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                await self.close()
                continue
            masters, everyone = parse_nodes(_text(text), address[0])
            if masters:
                # The node that answered is asked first next time, on the same connection.
                first = [address, *(a for a in everyone if a != address)]
                self._known = first + [a for a in self._known if a not in first]
                return masters
        raise ConnectionError("no known cluster node answered")

    async def close(self) -> None:
        """Close the connection kept for asking."""
        if self._asking is not None:
            client, self._asking = self._asking[1], None
            await client.aclose()

    async def _asker(self, address: Address) -> aioredis.Redis:
        """A connection to ``address`` for CLUSTER NODES, kept while it keeps answering."""
        if self._asking is None or self._asking[0] != address:
            await self.close()
            self._asking = (address, self.client(address, socket_timeout=self._connect_timeout))
        return self._asking[1]


def parse_nodes(text: str, asked_host: str) -> tuple[dict[Address, Slots], list[Address]]:
    """(masters owning slots, every node with an address) from ``CLUSTER NODES`` output."""
    masters: dict[Address, Slots] = {}
    everyone: list[Address] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or "noaddr" in fields[2] or "handshake" in fields[2]:
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        if not port.isdigit() or int(port) == 0:
            continue
        # A node that does not know its own address reports an empty host.
        address = (host or asked_host, int(port))
        everyone.append(address)
        # "[slot->-node]" marks a slot being migrated: it is still served by this node.
        slots = tuple(_range(spec) for spec in fields[8:] if not spec.startswith("["))
        if "master" in fields[2].split(",") and slots:
            masters[address] = slots
    return dict(sorted(masters.items())), everyone


def _range(spec: str) -> tuple[int, int]:
    low, _, high = spec.partition("-")
    return int(low), int(high or low)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class ClusterMasters:
    """The listener's nodes on a cluster: every master, found afresh at each subscription.

    Each master delivers its own publishes to its subscribers in order with its pongs; one
    forwarded over the cluster bus comes with no such order. So the listener subscribes on
    every master, and any master lost or replaced means subscribing afresh.
    """

    stale_on_loss = True

    def __init__(self, nodes: ClusterNodes, layout: KeyLayout) -> None:
        self._nodes = nodes
        self._layout = layout
        self._current: dict[Address, Slots] = {}

    async def connect(self) -> list[Node]:
        self._current = await self._nodes.masters()
        return [
            Node(self._nodes.client(address), self._publisher(slots))
            for address, slots in self._current.items()
        ]

    async def unchanged(self) -> bool:
        return await self._nodes.masters() == self._current

    async def close(self) -> None:
        await self._nodes.close()

    def _publisher(self, slots: Slots) -> Callable[[str], bool]:
        """Whether a master serving ``slots`` is the one whose scripts publish a store's writes."""

        def publishes(store_id: str) -> bool:
            slot = key_slot(self._layout.store(store_id).version.encode())
            return any(low <= slot <= high for low, high in slots)

        return publishes
