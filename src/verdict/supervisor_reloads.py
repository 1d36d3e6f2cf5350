"""The supervisor's part in reloads made by every worker (see verdict.worker_link).

A worker that takes a ReloadPolicies call sends ``reload_all``; the supervisor asks every
other serving worker to ``reload`` the same stores, collects what each then serves, and
answers the asking worker with ``peers`` once all have answered or the call's time is up.
Workers still starting get a SIGHUP, which they keep and honour once they serve.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from verdict.worker_link import json_line

log = structlog.get_logger(__name__)
MAX_WAIT_SECONDS = 600.0  # a worker's own bound on what it asks for; this caps a bad value


class RelayedWorker(Protocol):
    """What the relay needs of a supervised worker (supervisor.Worker)."""

    index: int
    channel: asyncio.StreamWriter | None
    ready: bool


class ReloadRelay:
    """Relays ``reload_all`` from one worker to the others and their answers back."""

    def __init__(
        self,
        workers: Callable[[], Mapping[int, RelayedWorker]],
        hangup: Callable[[int], None],
    ) -> None:
        self._workers = workers
        self._hangup = hangup  # SIGHUP to a starting worker, by index
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, str]]] = {}
        self._relays: set[asyncio.Task[None]] = set()

    async def listen(self, worker: RelayedWorker, reader: asyncio.StreamReader) -> None:
        """Read ``worker``'s lines until its end of file (it exited)."""
        try:
            while line := await reader.readline():
                self._dispatch(worker, line)
        except (OSError, ValueError):  # reset, or a line past the reader's limit
            log.error("worker_link_broken", worker=worker.index)

    def _dispatch(self, worker: RelayedWorker, line: bytes) -> None:
        try:
            message = json.loads(line)
            op, number = message["op"], int(message["id"])
        except (ValueError, KeyError, TypeError):
            log.error("worker_message_unreadable", worker=worker.index)
            return
        if op == "reload_all":
            task = asyncio.get_running_loop().create_task(self._relay(worker, number, message))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
        elif op == "reloaded":
            future = self._waiting.pop(number, None)
            try:
                versions = {str(k): str(v) for k, v in dict(message["versions"]).items()}
            except (KeyError, TypeError, ValueError):
                log.error("worker_message_unreadable", worker=worker.index)
                return
            if future is not None and not future.done():
                future.set_result(versions)

    async def _relay(self, asking: RelayedWorker, number: int, message: Mapping[str, Any]) -> None:
        timeout = min(MAX_WAIT_SECONDS, max(0.0, float(message.get("timeout", 0.0))))
        order = {"op": "reload", "stores": message.get("stores")}
        asked: dict[int, asyncio.Future[dict[str, str]]] = {}
        starting: list[int] = []
        for index, worker in sorted(self._workers().items()):
            if index == asking.index:
                continue
            if not worker.ready or worker.channel is None or worker.channel.is_closing():
                self._hangup(index)  # kept while it starts, honoured once it serves
                starting.append(index)
                continue
            relay_id = next(self._ids)
            future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
            self._waiting[relay_id] = future
            asked[index] = future
            worker.channel.write(json_line({**order, "id": relay_id}))
        if asked:
            await asyncio.wait(asked.values(), timeout=timeout)
        for relay_id in [k for k, f in self._waiting.items() if f in asked.values()]:
            del self._waiting[relay_id]
        versions = {i: f.result() for i, f in asked.items() if f.done() and not f.cancelled()}
        missing = sorted(i for i in asked if i not in versions)
        if missing:
            log.warning("peer_reload_unconfirmed", asking=asking.index, missing=missing)
        reply = {
            "op": "peers",
            "id": number,
            "versions": versions,
            "missing": missing,
            "starting": starting,
        }
        if asking.channel is not None and not asking.channel.is_closing():
            asking.channel.write(json_line(reply))
