"""A cap on log lines per event and second: a flood of refused calls must not become a flood of
log lines (disk, log shipping, the event loop's time). Metrics still count every event."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Logger(Protocol):
    """The part of a structlog logger the budget reports on."""

    def warning(self, event: str, **values: Any) -> Any: ...


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class LogBudget:
    """At most ``per_window`` lines of one event every ``window`` seconds; the lines held back
    are counted and reported once, by ``admit``, when the event next occurs in a new window."""

    def __init__(
        self,
        per_window: int = 20,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, event: str, log: Logger) -> bool:
        """Whether to log this occurrence of ``event``. The first occurrence in a new window
        first reports, on ``log``, how many lines of ``event`` the last window held back."""
        now = self._clock()
        current = self._windows.get(event)
        if current is None or now - current.started >= self.window:
            if current is not None and current.suppressed:
                log.warning("log_lines_held_back", held_event=event, count=current.suppressed)
            current = self._windows[event] = _Window(now)
        if current.logged < self.per_window:
            current.logged += 1
            return True
        current.suppressed += 1
        return False
