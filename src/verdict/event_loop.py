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

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")
# What starts a stop (SIGTERM, SIGINT) or a reload (SIGHUP, under the supervisor).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What asyncio.Runner builds its loop with (None: asyncio's default)."""
    if resolve(choice) == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to; once it is over, the stop
    signals are ignored (``ignore_stop_signals``)."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
            return runner.run(main)
    finally:
        ignore_stop_signals()


def ignore_stop_signals() -> None:
    """Ignore SIGTERM, SIGINT and SIGHUP from now on: the stop has run, and a signal has
    nothing left to ask. Closing its loop, asyncio puts their default actions back, and a
    signal in the last milliseconds of a clean exit (a preStop loop, a repeated Ctrl-C, a
    supervisor forwarding a second SIGTERM) killed the process: exit -15 instead of 0."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": the loop this coroutine runs on (for the start log line)."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )
