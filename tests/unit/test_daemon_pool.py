"""DaemonPool: results and errors reach the awaiting caller, a cancelled caller's queued work
never runs, and no thread of it can hold the process's exit."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from verdict.daemon_pool import DaemonPool


async def test_results_and_errors_reach_the_caller() -> None:
    pool = DaemonPool(2, "test-pool")
    assert await pool.run(sum, [1, 2, 3]) == 6
    assert await pool.run(int, "12", base=3) == 5
    with pytest.raises(ValueError, match="invalid literal"):
        await pool.run(int, "not a number")
    names = {t.name for t in threading.enumerate() if t.name.startswith("test-pool-")}
    assert names == {"test-pool-0", "test-pool-1"}
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("test-pool-"))


async def test_work_queued_for_a_cancelled_caller_never_runs() -> None:
    """One thread, held busy: the second caller is cancelled while its work waits in the
    queue, and that work never starts."""
    pool = DaemonPool(1, "test-cancel")
    release, ran = threading.Event(), threading.Event()
    busy = asyncio.ensure_future(pool.run(release.wait, 10))
    waiting = asyncio.ensure_future(pool.run(ran.set))
    await asyncio.sleep(0.05)
    waiting.cancel()
    # The cancel reaches the queued work one loop turn later (wrap_future's callback): let it
    # land before the thread is freed, else the thread may take the work first (a loaded CI).
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    release.set()
    assert await busy is True
    await asyncio.sleep(0.05)
    assert waiting.cancelled()
    assert not ran.is_set()
    assert await pool.run(lambda: "next") == "next"  # the thread took later work
