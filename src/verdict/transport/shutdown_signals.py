"""SIGTERM and SIGINT as events the server's run loop waits for."""

from __future__ import annotations

import asyncio
import os
import signal
import time

ORPHAN_SECONDS = 1.0  # signals this soon after the supervisor's death are news of it


class ShutdownSignals:
    """SIGTERM/SIGINT: the first starts a shutdown; another one cuts its drain short.

    Signals that arrive before the shutdown has taken the last one are one (a SIGTERM to the
    process group reaches a worker directly and, once, from its supervisor). The supervisor
    says which stop it means on the worker's socket instead (``stop_level``: 1 stop, 2 cut
    the drain short): signals do not queue, and its second SIGTERM, merged with a first the
    worker had not handled yet, had left a worker draining in full; counting every signal
    instead made the process group's one SIGTERM skip the drain (attack round 12)."""

    def __init__(self, parent: int | None = None) -> None:
        self._parent = parent  # a worker's supervisor (its death is one stop, see _orphaned)
        self._orphaned_at: float | None = None
        self.received = 0
        self._rounds = 0  # signal rounds: signals before a round is taken merge into it
        self._open = False  # a signal round not taken yet
        self._levels = 0  # the supervisor's stops
        self._taken = 0  # rounds next() has returned for
        self._arrived = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.trigger)

    def trigger(self) -> None:
        """A signal arrived."""
        self.received += 1
        if self._orphaned():
            return
        if not self._open:
            if self._orphaned_at is not None:  # no more levels will come: this is beyond them
                self._rounds = max(self._rounds, self._levels)
            self._open = True
            self._rounds += 1
        self._arrived.set()

    def supervisor_gone(self) -> None:
        """The supervisor's socket ended: one stop, the same as the kernel's SIGTERM for its
        death (see ``_orphaned``), never a second."""
        if not self._orphaned():
            self.stop_level(1)

    def _orphaned(self) -> bool:
        """Whether the supervisor is dead and this is news of it: the first news is one stop
        (a first stop if none was taken, never a second), and every signal in the
        ORPHAN_SECONDS after it is the same news. The kernel sends SIGTERM on the supervisor's
        death (worker_server.die_with_parent), and again for each of its threads the worker
        is handed to as they die: with the end of file on the socket, that was two or three
        stops, and every worker of a SIGKILLed supervisor cut its drain to nothing (attack
        round 13). A SIGTERM sent later still cuts the drain short."""
        if self._parent is None or os.getppid() == self._parent:
            return False
        now = time.monotonic()
        if self._orphaned_at is None:
            self._orphaned_at = now
            self.stop_level(1)
            return True
        return now - self._orphaned_at < ORPHAN_SECONDS

    def stop_level(self, level: int) -> None:
        """The supervisor's ``level``-th stop (1: stop, 2: cut the drain short)."""
        self._levels = max(self._levels, level)
        self._arrived.set()

    async def next(self) -> None:
        """Return once a stop arrives that was not waited for before."""
        while self._taken >= max(self._rounds, self._levels):
            self._arrived.clear()
            await self._arrived.wait()
        self._taken += 1
        self._open = False
