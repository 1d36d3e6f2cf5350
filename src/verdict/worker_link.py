"""A worker's end of the supervisor's socket once it serves: reloads made by every worker.

`verdict serve --workers N` answers a ReloadPolicies call from one worker. With the file watch
off nothing else told the other workers, and they served the old policies for good: a new
forbid on disk, RELOADED in the answer, and new connections ALLOWed by the other worker about
half the time (attack round 10). Now the worker that takes the call asks the supervisor to
have every other worker reload the same stores, and answers only once they have said what
they serve (or the time is up).

The socket carries JSON lines. Worker to supervisor: ``reload_all`` (id, stores, timeout),
``reloaded`` (id, versions). Supervisor to worker: ``reload`` (id, stores), ``peers`` (id,
versions by worker, missing), ``stop`` (id 0, level: 1 stop, 2 cut the drain short). The end
of file says the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from verdict.policy.reloader import PeerReport, PolicyReloader

log = structlog.get_logger(__name__)
MAX_LINE_BYTES = 16 * 1024 * 1024  # a versions map of many stores; the peer is our supervisor


def json_line(message: Mapping[str, Any]) -> bytes:
    """One message of the socket: a JSON object on a line of its own."""
    return json.dumps(message).encode() + b"\n"


def stores_of(message: Mapping[str, Any]) -> frozenset[str] | None:
    """The ``stores`` of a message: None (every store) or a set of store ids."""
    stores = message.get("stores")
    return None if stores is None else frozenset(str(s) for s in stores)


class SupervisorLink:
    """Reloads asked by the supervisor (another worker's ReloadPolicies), reloads this worker
    asks of the others, the supervisor's stops (``on_stop(level)``: said here, not signalled,
    see ShutdownSignals), and the supervisor's end of file (``on_gone``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reloader: PolicyReloader | None,
        on_gone: Callable[[], None],
        on_stop: Callable[[int], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._reloader = reloader
        self._on_gone = on_gone
        self._on_stop = on_stop
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[PeerReport]] = {}
        self._answers: set[asyncio.Task[None]] = set()

    def send(self, message: Mapping[str, Any]) -> None:
        """One JSON line to the supervisor (small: no need to wait for the buffer)."""
        if not self._writer.is_closing():
            self._writer.write(json_line(message))

    async def run(self) -> None:
        """Read the supervisor's lines until its end of file, then ``on_gone``."""
        try:
            while line := await self._reader.readline():
                self._dispatch(line)
        except (OSError, ValueError):  # reset, or a line past the limit
            pass
        for future in self._waiting.values():  # the others can no longer say: not confirmed
            if not future.done():
                future.set_result(PeerReport(missing=(-1,)))
        log.warning("supervisor_gone")
        self._on_gone()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            op, number = message["op"], int(message["id"])
        except (ValueError, KeyError, TypeError):
            log.error("supervisor_message_unreadable")
            return
        if op == "stop":
            self._on_stop(int(message.get("level", 1)))
        elif op == "reload" and self._reloader is not None:
            task = asyncio.get_running_loop().create_task(self._reload(number, message))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
        elif op == "peers":
            future = self._waiting.pop(number, None)
            if future is not None and not future.done():
                future.set_result(_report(message))

    async def _reload(self, number: int, message: Mapping[str, Any]) -> None:
        assert self._reloader is not None  # only dispatched with one
        only = stores_of(message)
        try:
            await self._reloader.reload("peer", only)
        except Exception as exc:  # still answer: the asking worker reports what is served
            log.error("policy_reload_crashed", trigger="peer", error_type=type(exc).__name__)
        self.send({"op": "reloaded", "id": number, "versions": self._reloader.served(only)})

    async def reload_others(self, only: frozenset[str] | None, seconds: float) -> PeerReport:
        """Have every other worker reload ``only`` (None: every store); what they then serve."""
        number = next(self._ids)
        future: asyncio.Future[PeerReport] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        stores = None if only is None else sorted(only)
        self.send({"op": "reload_all", "id": number, "stores": stores, "timeout": seconds})
        try:
            # The supervisor answers within ``timeout`` (it names the workers that did not);
            # the margin covers its own turn on a busy machine.
            return await asyncio.wait_for(future, seconds + 5.0)
        except TimeoutError:
            return PeerReport(missing=(-1,))
        finally:
            self._waiting.pop(number, None)

    async def close(self) -> None:
        """Stop answering: pending reload answers are dropped (the process is stopping)."""
        for task in list(self._answers):
            task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def _report(message: Mapping[str, Any]) -> PeerReport:
    versions = {
        int(worker): {str(k): str(v) for k, v in dict(served).items()}
        for worker, served in dict(message.get("versions", {})).items()
    }
    missing = tuple(int(w) for w in message.get("missing", ()))
    return PeerReport(versions, missing, tuple(int(w) for w in message.get("starting", ())))
