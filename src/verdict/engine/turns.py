"""Cooperative yielding for long engine work that runs on the event loop."""

from __future__ import annotations

import asyncio


async def give_turn() -> None:
    """Let callbacks that became ready meanwhile (other requests' I/O, timers) and the tasks
    they wake run before we continue. A timer-woken task needs two turns of the loop (the
    timer's callback resolves its future, whose callback then schedules the task), and after
    each ``sleep(0)`` our continuation is queued ahead of what that turn schedules: with two
    yields such a task ran only after our next step (measured: every other Cedar chunk of a
    write), so we yield three times."""
    for _ in range(3):
        await asyncio.sleep(0)
