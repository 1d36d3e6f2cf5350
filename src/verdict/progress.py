"""Progress of long commands: a bar per phase on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Phase(Protocol):
    """One phase of a command; ``advance`` adds to its count of items done."""

    def advance(self, count: int) -> None: ...

    def reached(self, done: int, fraction: float) -> None:
        """``done`` items so far, ``fraction`` of the input read: for a phase whose count of
        items is not known before it ends (a parse)."""
        ...


class Reporter(Protocol):
    """Where a command reports its phases."""

    @contextmanager
    def phase(self, name: str, total: int | None = None, note: str = "") -> Iterator[Phase]:
        """A phase named ``name`` of ``total`` items (None: unknown); ``note``, shown with its
        start line, says what is not plain from the name (when it runs, what waits for it)."""
        ...


@contextmanager
def reporter(stream: TextIO | None = None, *, interval: float = 2.0) -> Iterator[Reporter]:
    """A bar per phase on a terminal; plain lines every ``interval`` seconds elsewhere (logs,
    CI). Phases may overlap (one runs while another waits)."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield LineReporter(stream, interval)
        return
    columns = (
        SpinnerColumn(finished_text="done"),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bars:
        yield BarReporter(bars)


class _Counter:
    def __init__(self, owner: LineReporter, name: str, total: int | None) -> None:
        self.done = 0
        self.name = name
        self.total = total
        self.fraction: float | None = None
        self.started = self.last = time.monotonic()
        self._owner = owner

    def advance(self, count: int) -> None:
        self.done += count
        self._owner.tick(self)

    def reached(self, done: int, fraction: float) -> None:
        self.done, self.fraction = done, min(fraction, 1.0)
        self._owner.tick(self)

    def describe(self) -> str:
        elapsed = time.monotonic() - self.started
        if self.total:
            return f"{self.done:,}/{self.total:,} ({self.done / self.total:.0%}) in {elapsed:.1f}s"
        if self.fraction is not None:
            return f"{self.done:,} ({self.fraction:.0%} of the file) in {elapsed:.1f}s"
        return f"{self.done:,} in {elapsed:.1f}s" if self.done else f"{elapsed:.1f}s"


class LineReporter:
    """A line when a phase starts, at most one every ``interval`` seconds while it advances,
    and one when it ends, each with its count and elapsed time."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self._stream = stream
        self._interval = interval

    @contextmanager
    def phase(self, name: str, total: int | None = None, note: str = "") -> Iterator[Phase]:
        counter = _Counter(self, name, total)
        self._say(f"{name}: started" + (f", {total:,} to do" if total else "") + note)
        try:
            yield counter
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Ctrl-C: where the phase stopped, never "done" for what was cut short.
            self._say(f"{name}: interrupted at {counter.describe()}")
            raise
        self._say(f"{name}: done, {counter.describe()}")

    def tick(self, counter: _Counter) -> None:
        now = time.monotonic()
        if now - counter.last >= self._interval:
            counter.last = now
            self._say(f"{counter.name}: {counter.describe()}")

    def _say(self, line: str) -> None:
        print(line, file=self._stream, flush=True)


class _BarPhase:
    def __init__(self, bars: Progress, task: TaskID) -> None:
        self._bars = bars
        self._task = task
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        self._bars.advance(self._task, count)

    def reached(self, done: int, fraction: float) -> None:
        # The bar's total is what the file holds at this rate: it settles as the parse goes.
        self.done = done
        total = round(done / fraction) if fraction > 0 else None
        self._bars.update(self._task, completed=done, total=total)


class BarReporter:
    """rich progress bars on a terminal, one line per phase, left on screen when done."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars

    @contextmanager
    def phase(self, name: str, total: int | None = None, note: str = "") -> Iterator[Phase]:
        task = self._bars.add_task(name, total=total)  # the note: for the plain lines only
        phase = _BarPhase(self._bars, task)
        yield phase
        # A phase of unknown size shows a full bar once done.
        done = total or phase.done or 1
        self._bars.update(task, total=done, completed=done)
