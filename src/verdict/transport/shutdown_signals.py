"""SIGTERM and SIGINT as events the server's run loop waits for."""

from __future__ import annotations

import asyncio
import signal

from verdict.early_signals import PARENT_DIED


class ShutdownSignals:
    """SIGTERM/SIGINT: the first starts a shutdown; another one cuts its drain short.

    Signals that arrive before the shutdown has taken the last one are one (a SIGTERM to the
    process group reaches a worker directly and, once, from its supervisor). The supervisor
    says which stop it means on the worker's socket instead (``stop_level``: 1 stop, 2 cut
    the drain short): signals do not queue, and its second SIGTERM, merged with a first the
    worker had not handled yet, had left a worker draining in full; counting every signal
    instead made the process group's one SIGTERM skip the drain (attack round 12).

    A worker (``supervised``) also hears of its supervisor's death: the end of file on its
    socket and the kernel's PARENT_DIED, sent again for each supervisor thread that dies.
    All of that is one stop, never a second (``supervisor_gone``)."""

    def __init__(self, supervised: bool = False) -> None:
        self._supervised = supervised
        self._gone = False  # the supervisor's death was heard of: no more levels will come
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
        if self._supervised:
            loop.add_signal_handler(PARENT_DIED, self.supervisor_gone)

    def trigger(self) -> None:
        """A signal arrived. It merges into a round not taken yet, unless that round is
        already covered by the stops taken (the process group's own copy of a stop the
        supervisor said first): then it is a stop of its own, and a later SIGTERM to one
        worker cut no drain short."""
        self.received += 1
        if not self._open or self._rounds <= self._taken:
            if self._gone:  # no more levels will come: this is beyond them
                self._rounds = max(self._rounds, self._levels)
            self._open = True
            self._rounds += 1
        self._arrived.set()

    def supervisor_gone(self) -> None:
        """The supervisor died (its socket ended, or the kernel said so, as often as it has
        threads): one stop, a first stop if none was taken, never a second. A SIGTERM sent
        after it still cuts the drain short. Round 13: a SIGKILLed supervisor, its death
        taken as two or three stops, left every worker without its drain."""
        self._gone = True
        self.stop_level(1)

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
