"""ShutdownSignals: signals that arrive before a stop is taken are one (a SIGTERM to the
process group reaches a worker directly and from its supervisor), and the supervisor's stops,
said on the worker's socket with their level, stay two when it sent two."""

from __future__ import annotations

import asyncio
import os
import signal

from verdict.early_signals import PARENT_DIED
from verdict.transport.shutdown_signals import ShutdownSignals


async def waits(signals: ShutdownSignals) -> bool:
    """Whether the next stop is still to come (nothing owed now)."""
    pending = asyncio.ensure_future(signals.next())
    await asyncio.sleep(0.05)
    if pending.done():
        return False
    pending.cancel()
    return True


async def test_signals_before_the_stop_is_taken_are_one() -> None:
    signals = ShutdownSignals()
    signals.trigger()  # its own SIGTERM (the process group)
    signals.trigger()  # the same stop, forwarded
    await asyncio.wait_for(signals.next(), 1)  # the shutdown starts
    assert await waits(signals)  # and drains: nothing cuts it short
    signals.trigger()  # a second stop, after the first was taken
    await asyncio.wait_for(signals.next(), 1)  # cuts the drain short
    assert signals.received == 3


async def test_the_supervisors_levels_stay_two_before_any_wait() -> None:
    """A worker busy when both of the supervisor's stops arrive still cuts its drain short
    (as signals, the two had merged and it drained in full)."""
    signals = ShutdownSignals()
    signals.stop_level(1)
    signals.stop_level(2)
    await asyncio.wait_for(signals.next(), 1)
    await asyncio.wait_for(signals.next(), 1)
    assert await waits(signals)


async def test_a_direct_signal_and_the_supervisors_first_stop_are_one_stop() -> None:
    """SIGTERM to the process group: the worker's own signal and the supervisor's level 1
    are the same stop, in either order; the drain runs until a second one."""
    for order in ("signal first", "level first"):
        signals = ShutdownSignals()
        if order == "signal first":
            signals.trigger()
            await asyncio.wait_for(signals.next(), 1)
            signals.stop_level(1)
        else:
            signals.stop_level(1)
            signals.trigger()
            await asyncio.wait_for(signals.next(), 1)
        assert await waits(signals), order
        signals.stop_level(2)
        await asyncio.wait_for(signals.next(), 1)


async def test_news_of_the_supervisors_death_is_one_stop() -> None:
    """The end of file on the supervisor's socket and the kernel's PARENT_DIED, sent once per
    supervisor thread the worker is handed to as they die, are one stop however they
    interleave with the stop being taken; a SIGTERM after them still cuts the drain short.
    Round 13 (and a CI run): the kernel's news came as SIGTERMs, and one handled after the
    stop was taken was a second stop, which left a SIGKILLed supervisor's workers no drain."""
    signals = ShutdownSignals(supervised=True)
    signals.supervisor_gone()  # the kernel, for the thread the worker was forked from
    await asyncio.wait_for(signals.next(), 1)
    for _ in range(3):  # the next threads, the socket's end of file: handled one by one
        signals.supervisor_gone()
        assert await waits(signals)
    signals.trigger()  # an operator's SIGTERM, later: cuts the drain short
    await asyncio.wait_for(signals.next(), 1)


async def test_a_stop_taken_before_the_supervisor_died_is_not_repeated_by_its_death() -> None:
    signals = ShutdownSignals(supervised=True)
    signals.stop_level(1)  # the supervisor's stop, then it is killed
    await asyncio.wait_for(signals.next(), 1)
    signals.supervisor_gone()
    signals.supervisor_gone()
    assert await waits(signals)


async def test_the_kernels_news_arrives_as_its_own_signal() -> None:
    """PARENT_DIED reaches ``supervisor_gone`` through the loop's handler, not ``trigger``:
    sent three times with the stop taken in between, it is still one stop."""
    signals = ShutdownSignals(supervised=True)
    signals.install()
    try:
        os.kill(os.getpid(), PARENT_DIED)
        await asyncio.wait_for(signals.next(), 1)
        for _ in range(2):
            os.kill(os.getpid(), PARENT_DIED)
            assert await waits(signals)
        assert signals.received == 0  # no SIGTERM was counted
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, PARENT_DIED):
            loop.remove_signal_handler(sig)


async def test_a_sigterm_after_the_groups_copy_of_a_taken_stop_cuts_the_drain_short() -> None:
    """A SIGTERM to the process group: the supervisor's level 1 is taken first, then the
    worker's own copy arrives (one stop). An operator's later SIGTERM to this worker alone is
    a second stop; it had merged into the copy's round, never taken, and drained in full."""
    signals = ShutdownSignals(supervised=True)
    signals.stop_level(1)
    await asyncio.wait_for(signals.next(), 1)
    signals.trigger()  # the group's copy: the same stop
    assert await waits(signals)
    signals.trigger()  # the operator's
    await asyncio.wait_for(signals.next(), 1)
