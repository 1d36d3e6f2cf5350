"""A loopback TCP proxy in front of Redis that adds latency, cuts connections or cuts pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    """One proxied client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    subscriber: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            writer.close()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to Redis on ``target_port``, with faults switched at runtime.

    ``latency``: seconds added to everything Redis sends back (order kept).
    ``refuse``: new connections are closed at once (Redis unreachable through the proxy).
    ``block_subscribers``: a connection that sends (P)SUBSCRIBE is cut, so a listener can
    neither keep nor regain its subscription while every other connection works.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0
        self.refuse = False
        self.block_subscribers = False
        self.cuts = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    def cut(self, subscribers_only: bool = False) -> int:
        """Close open connections (or only subscriber ones); returns how many were cut."""
        chosen = [k for k in self._links if k.subscriber or not subscribers_only]
        for link in chosen:
            self._links.discard(link)
            link.close()
        self.cuts += len(chosen)
        return len(chosen)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # Redis is down: the client sees its connection closed
            writer.close()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._upstream(reader, link)),
            asyncio.create_task(self._downstream(up_reader, link)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)
        link.close()

    async def _upstream(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            if b"SUBSCRIBE" in data.upper():
                link.subscriber = True
                if self.block_subscribers:
                    self.cuts += 1
                    break
            link.upstream.write(data)
            await link.upstream.drain()
        link.close()

    async def _downstream(self, reader: asyncio.StreamReader, link: _Link) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(queue, link))
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.latency, data))
            await queue.put((0.0, b""))  # Redis closed: deliver what is due, then close
            await sender
        finally:
            sender.cancel()
            link.close()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]], link: _Link) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            link.client.write(data)
            await link.client.drain()
