"""ShutdownSignals counts its signals: a second stop that arrives before the first was waited
for still cuts the drain short (the supervisor repeats a stop on the worker's socket, and the
two must not merge into one)."""

from __future__ import annotations

import asyncio

from verdict.transport.shutdown_signals import ShutdownSignals


async def test_two_signals_before_any_wait_are_two() -> None:
    signals = ShutdownSignals()
    signals.trigger()
    signals.trigger()
    await asyncio.wait_for(signals.next(), 1)  # the first: the shutdown starts
    await asyncio.wait_for(signals.next(), 1)  # the second: the drain is cut short
    third = asyncio.ensure_future(signals.next())
    await asyncio.sleep(0.05)
    assert not third.done()  # nothing more arrived: the next wait waits
    signals.trigger()
    await asyncio.wait_for(third, 1)
    assert signals.received == 3


async def test_a_signal_while_waiting_wakes_the_wait_once() -> None:
    signals = ShutdownSignals()
    waiting = asyncio.ensure_future(signals.next())
    await asyncio.sleep(0)
    signals.trigger()
    await asyncio.wait_for(waiting, 1)
    again = asyncio.ensure_future(signals.next())
    await asyncio.sleep(0.05)
    assert not again.done()
    again.cancel()
