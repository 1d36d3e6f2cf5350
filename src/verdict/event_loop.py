"""Which asyncio event loop serves: asyncio's own (the default) or uvloop (libuv, in C).

Measured on the lending mix (one worker, interleaved rounds): uvloop takes ~7% less server CPU
per decision and answers ~8% more decisions/s at c=16 (benchmarks/bench_event_loop.py).
``VERDICT_EVENT_LOOP`` chooses: ``auto`` (uvloop if importable), ``uvloop`` (required) or
``asyncio``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from verdict.early_signals import QUIETED

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The chosen loop cannot run here (``uvloop`` chosen but not installed)."""


def resolve(choice: str) -> str:
    """The loop ``choice`` means on this machine: "uvloop" or "asyncio"."""
    if choice not in CHOICES:
        raise EventLoopError(f"event_loop: {choice!r} is not one of {', '.join(CHOICES)}")
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        raise EventLoopError("event_loop: uvloop is not installed (pip install uvloop)")
    if choice == "asyncio" or not available:
        return "asyncio"
    return "uvloop"


class _StopSignalsStayIgnored(asyncio.AbstractEventLoop):
    """A loop whose stop signals, once ignored, stay ignored through its close.

    asyncio and uvloop put a signal's default action back when its handler is removed, and
    they remove every handler when the loop closes: a SIGTERM (a preStop loop, a repeated
    Ctrl-C, a supervisor forwarding a second one) landing between that and the interpreter's
    exit killed a process whose stop had finished (exit -15 instead of 0). Setting SIG_IGN
    after the close left that window open; here the disposition goes straight from the loop's
    handler to SIG_IGN, and the close leaves it there.
    """

    _stop_signals_ignored = False

    def ignore_stop_signals(self) -> None:
        """SIGTERM, SIGINT, SIGHUP and PARENT_DIED are ignored from now on (the stop has run)."""
        for sig in QUIETED:
            signal.signal(sig, signal.SIG_IGN)
        self._stop_signals_ignored = True

    def remove_signal_handler(self, sig: int) -> bool:
        if self._stop_signals_ignored and sig in QUIETED:
            return False  # stays SIG_IGN; the loop's entry for it goes with the loop
        return super().remove_signal_handler(sig)

    def close(self) -> None:
        super().close()
        if self._stop_signals_ignored:
            # The loop kept its entries, so it did not clear the wakeup fd it set up: its
            # socket is closed now and the fd number may be reused.
            signal.set_wakeup_fd(-1)


class _AsyncioLoop(_StopSignalsStayIgnored, asyncio.SelectorEventLoop):
    """asyncio's own loop, stop signals as above."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What asyncio.Runner builds its loop with: ``choice``'s loop, keeping the stop signals
    ignored through its close (``_StopSignalsStayIgnored``)."""
    if resolve(choice) == "asyncio":
        return _AsyncioLoop
    import uvloop

    class _UvLoop(_StopSignalsStayIgnored, uvloop.Loop):  # type: ignore[misc]
        """uvloop, stop signals as above."""

    return _UvLoop


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to; once ``main`` is over (its
    stop has run), the stop signals are ignored until the process exits."""

    async def then_ignore_stop_signals() -> T:
        try:
            return await main
        finally:
            loop = asyncio.get_running_loop()
            assert isinstance(loop, _StopSignalsStayIgnored)  # built by loop_factory
            loop.ignore_stop_signals()

    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(then_ignore_stop_signals())


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": the loop this coroutine runs on (for the start log line)."""
    classes = type(asyncio.get_running_loop()).__mro__  # ours derive from uvloop.Loop
    return "uvloop" if any(c.__module__.startswith("uvloop") for c in classes) else "asyncio"
