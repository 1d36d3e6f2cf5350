"""The calls a stop waits for: unary calls whose request arrived, until their reply was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
import structlog

from verdict.transport.pipeline import Behavior, Handler, around_unary

log = structlog.get_logger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# How long a stop waits, once every handler returned, for their replies to be sent. Replies
# to callers that read are sent within milliseconds; a caller that never reads (an HTTP/2
# receive window of 0) holds its reply for good, and must not hold the stop for longer.
REPLY_MARGIN_SECONDS = 1.0
# grpc's own grace once the counted calls were answered, for what grpc.aio took from core
# meanwhile: a call being refused as retryable, or whose message is still arriving (to be
# refused), would be cut as CANCELLED at 0. Calls that never sent their request are cut at
# its end, so it is also what they cost a stop. (Measured: with 0 the drain tests lost no
# call either; the margin is for slower machines and links.)
FINAL_GRACE_SECONDS = 0.25


class CallsInProgress:
    """Counts every unary call of the server that started before ``settle``: ``working`` while
    its handler runs, ``unsent`` until grpc sent its reply (its done callback ran).

    Why: grpc's ``server.stop(grace)`` waits for every call core holds, those that sent their
    headers and never their message too. No handler runs for those (a unary handler starts
    once its message arrived) and they never end, so any peer with a connection made every
    stop wait its whole grace. A stop waits for these counts instead, then stops grpc with a
    short grace. Streams (health Watch, reflection) are not counted: they end only when their
    caller ends them.
    """

    def __init__(self) -> None:
        self.working = 0
        self.unsent = 0
        self.settling = False
        self._changed = asyncio.Event()

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` counted, if it is a unary method."""
        return around_unary(handler, self._counted)

    def _counted(self, behavior: Behavior) -> Behavior:
        async def counted(request: Any, context: Context) -> Any:
            if self.settling:
                # Not counted: a stream of new calls (refused, or health checks) must not keep
                # the counts above zero and the stop waiting; the final grace covers them.
                return await behavior(request, context)
            self.working += 1
            self.unsent += 1
            context.add_done_callback(self._sent)  # type: ignore[arg-type]  # the stubs want a class
            try:
                return await behavior(request, context)
            finally:
                self.working -= 1
                self._changed.set()

        return counted

    def _sent(self, _context: Context) -> None:
        self.unsent -= 1
        self._changed.set()

    async def settle(self, grace: float, margin: float = REPLY_MARGIN_SECONDS) -> None:
        """Count no new call; wait up to ``grace`` seconds for the handlers in progress to
        return, then up to ``margin`` more (within the grace) for their replies to be sent."""
        self.settling = True
        started = time.monotonic()
        deadline, waited_for = started + grace, self.unsent
        await self._until(lambda: self.working == 0, deadline)
        await self._until(lambda: self.unsent == 0, min(deadline, time.monotonic() + margin))
        if waited_for or self.unsent:
            log.info(
                "shutdown_calls_settled",
                calls=waited_for,
                still_running=self.working,
                replies_unsent=self.unsent,
                seconds=round(time.monotonic() - started, 3),
            )

    async def _until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return
