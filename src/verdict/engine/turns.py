"""Cooperative yielding for long engine work that runs on the event loop."""

from __future__ import annotations

import asyncio


async def give_turn() -> None:
    """Let callbacks that became ready meanwhile (other requests' I/O, timers) run before we
    continue. After one ``sleep(0)`` our continuation would run ahead of them in the next turn
    of the loop, so we yield twice."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
