"""SIGTERM and SIGINT as events the server's run loop waits for."""

from __future__ import annotations

import asyncio
import signal


class ShutdownSignals:
    """SIGTERM/SIGINT: the first starts a shutdown; another one cuts its drain short."""

    def __init__(self) -> None:
        self.received = 0
        self._waited = 0  # signals a next() has returned for
        self._arrived = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.trigger)

    def trigger(self) -> None:
        """A signal arrived (or an equivalent, such as the supervisor going away)."""
        self.received += 1
        self._arrived.set()

    async def next(self) -> None:
        """Return once a signal arrives that was not waited for before. Counted: two that
        arrive before the first is waited for are two (the second cuts the drain short)."""
        while self.received <= self._waited:
            self._arrived.clear()
            await self._arrived.wait()
        self._waited += 1
