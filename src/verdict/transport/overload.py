"""Admission control: past the concurrency limit a call is refused at once, never queued; once
the server shuts down, every new call is refused as retryable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any, NoReturn

import grpc

from verdict.telemetry import metrics
from verdict.transport.pipeline import Behavior, Handler, around_unary

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SHUTTING_DOWN = grpc.StatusCode.UNAVAILABLE
SHUTTING_DOWN_MESSAGE = "the server is shutting down; retry (another replica answers)"


def overload_message(limit: int) -> str:
    """The status text of a refused call: the setting that bounds it, and what to do."""
    return f"max_concurrent_calls: the server is at its limit of {limit} calls; retry later"


class ConcurrencyLimit:
    """Admit at most ``limit`` unary calls of ``services`` at once; the rest get RESOURCE_EXHAUSTED.

    grpc.aio would otherwise accept every call and queue its work on the event loop, so under a
    flood every caller waits longer and longer. Health and reflection are not counted: a
    Kubernetes probe must still get through while decisions are saturated. Calls of
    ``closing_only`` are not limited either (an operator's reload must get through a flood of
    decisions), only refused once closing like the others: a stopping server waits for no
    work that starts after the stop began.
    """

    def __init__(
        self,
        limit: int,
        services: Collection[str],
        worker: int = 0,
        closing_only: Collection[str] = (),
    ) -> None:
        self.limit = limit
        self.active = 0
        self.closing = False
        self.refused_closing = 0  # calls refused since ``close``
        self._prefixes = tuple(f"/{service}/" for service in services)
        self._closing_prefixes = tuple(f"/{service}/" for service in closing_only)
        # Bound once: looking a labelled child up costs more than counting into it.
        self._admitted = metrics.WORKER_CALLS.labels(worker=str(worker))

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` behind the limit, if it is a unary method of the limited services
        (behind the refusal at close alone, if one of ``closing_only``)."""
        if method.startswith(self._prefixes):
            return around_unary(handler, self._admit)
        if method.startswith(self._closing_prefixes):
            return around_unary(handler, self._unless_closing)
        return handler

    async def _refuse_closing(self, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        self.refused_closing += 1
        metrics.CALLS_REFUSED.labels(reason="shutting_down").inc()
        await context.abort(SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)

    def _admit(self, behavior: Behavior) -> Behavior:
        async def limited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.closing:
                await self._refuse_closing(context)
            if self.active >= self.limit:
                # Counted, not logged: a flood must not turn into a flood of log lines.
                metrics.CALLS_REFUSED.labels(reason="concurrency").inc()
                await context.abort(EXHAUSTED, overload_message(self.limit))
            self.active += 1
            self._admitted.inc()
            try:
                return await behavior(request, context)
            finally:
                self.active -= 1

        return limited

    def _unless_closing(self, behavior: Behavior) -> Behavior:
        async def unlimited(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.closing:
                await self._refuse_closing(context)
            return await behavior(request, context)

        return unlimited

    async def close(self, *, quiet: float = 0.02, at_most: float = 0.25) -> int:
        """Refuse every new call (UNAVAILABLE, which callers retry) from now on, and return once
        the calls waiting in grpc core have been taken and refused: after ``quiet`` seconds of
        the event loop running freely without a call, or ``at_most`` seconds under a steady
        stream of retries. Returns how many calls were refused meanwhile.

        Why: grpc.aio takes calls from core one at a time, so with the event loop busy, calls
        queue in core; core's shutdown cancels those (the caller sees CANCELLED, which it must
        not retry blindly), even though they arrived before the signal. Taken and refused here,
        they fail retryably instead. Calls already admitted run on; the stop waits for them
        (``CallsInProgress.settle``).
        """
        self.closing = True
        step = quiet / 4
        started = time.monotonic()
        quiet_since, refused = started, self.refused_closing
        while (before := time.monotonic()) - started < at_most:
            await asyncio.sleep(step)
            after = time.monotonic()
            # Quiet only while the loop ran as asked: a late wake-up means the loop was busy or
            # the process was not scheduled, and queued calls may not have been taken yet.
            if self.refused_closing != refused or after - before > 2 * step:
                quiet_since, refused = after, self.refused_closing
            elif after - quiet_since >= quiet:
                break
        return self.refused_closing
