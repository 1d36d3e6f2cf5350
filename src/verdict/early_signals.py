"""Stop and reload signals that arrive before the serving loop's handlers: kept, never fatal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# What the supervisor forwards: SIGTERM and SIGINT stop a process, SIGHUP reloads its policies.
STOPS = (signal.SIGTERM, signal.SIGINT)
HELD = (*STOPS, signal.SIGHUP)
# What the kernel sends a worker each time its supervisor's thread it hangs from dies
# (PR_SET_PDEATHSIG, worker_server.die_with_parent): news of one event, never a stop of its own.
PARENT_DIED = signal.SIGUSR2
# Ignored once a process's stop has run: any of them arriving in its last moments is moot.
QUIETED = (*HELD, PARENT_DIED)


class _Arrived:
    """What arrived before the serving loop's handlers: a reload, or a stop, still owed."""

    sighup = False
    stop = False


_ARRIVED = _Arrived()  # signal handlers are per process; so is what they record


@contextmanager
def held_by_children() -> Iterator[None]:
    """Processes started in this block start with HELD blocked (the signal mask survives fork
    and exec): a signal sent to one while its interpreter starts and imports waits, pending,
    until ``keep_until_serving`` takes it, where it used to kill the process.

    Blocked in the calling thread only, and on leaving unblocked rather than restored: the
    block may span an await in which another spawn enters and leaves (its restore would
    block them for good); each spawn's fork happened before the first suspension.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def keep_until_serving() -> None:
    """The first step of a worker or `verdict serve`, before their imports (~0.5 s of grpc,
    Cedar, Redis; seconds on a loaded machine): a SIGHUP is kept as a reload owed
    (``sighup_arrived_early``) and a SIGTERM/SIGINT as a stop owed, which
    ``stop_quietly_until_serving`` honours once the imports are done: a SystemExit raised in
    the middle of an import surfaced as a traceback and exit 1 (a SIGINT to `serve` still
    importing a dataclass: "RuntimeError: Error calling __set_name__"). Then what arrived
    since the fork, held by ``held_by_children``, is delivered."""
    for sig in STOPS:
        signal.signal(sig, _record_stop)
    signal.signal(signal.SIGHUP, _record_sighup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def stop_quietly_until_serving() -> None:
    """Until the serving loop installs its own handlers: SIGTERM and SIGINT end the process
    with exit 0 (nothing is in flight while the policies load), and a SIGHUP is recorded for
    the server to reload once it serves (``sighup_arrived_early``): the load may already
    have read the files it announces. A stop kept by ``keep_until_serving`` ends it now.
    Before, a stop while a large store loaded killed the process (-15, or a KeyboardInterrupt
    traceback and -2), and a SIGHUP killed a loading worker (failing the supervisor's start)
    or, once ignored, was lost with its edit."""
    for sig in STOPS:
        signal.signal(sig, _exit_quietly)
    signal.signal(signal.SIGHUP, _record_sighup)
    if _ARRIVED.stop:  # checked after the handlers are set: a stop in between exits too
        _exit_quietly(signal.SIGTERM, None)


def sighup_arrived_early() -> bool:
    """Whether a SIGHUP arrived before the loop's handler (and forget it)."""
    arrived, _ARRIVED.sighup = _ARRIVED.sighup, False
    return arrived


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    # SIG_IGN first: the interpreter's exit puts the default action back for a Python handler
    # (never for SIG_IGN), and a second signal in its last moments killed the process.
    for sig in QUIETED:
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def exit_quietly_when_parent_dies() -> None:
    """Until the serving loop installs its own handler: the supervisor's death (PARENT_DIED)
    ends a loading worker with exit 0, as a stop would."""
    signal.signal(PARENT_DIED, _exit_quietly)


def _record_stop(signum: int, frame: FrameType | None) -> None:
    _ARRIVED.stop = True


def _record_sighup(signum: int, frame: FrameType | None) -> None:
    _ARRIVED.sighup = True
