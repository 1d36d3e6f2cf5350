"""The log budget: at most N lines of an event per window, the rest counted and reported."""

from __future__ import annotations

from typing import Any

from verdict.telemetry.log_budget import LogBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Reports:
    """Records what the budget reports."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **values: Any) -> None:
        self.lines.append((event, values))


def test_lines_past_the_budget_are_held_back_and_reported_once() -> None:
    clock, reports = Clock(), Reports()
    budget = LogBudget(per_window=3, window=1.0, clock=clock)
    assert [budget.admit("refused", reports) for _ in range(10)] == [True] * 3 + [False] * 7
    assert budget.admit("other", reports)  # events have budgets of their own
    assert reports.lines == []
    clock.now = 1.0
    assert budget.admit("refused", reports)
    assert reports.lines == [("log_lines_held_back", {"held_event": "refused", "count": 7})]
    clock.now = 2.5
    assert budget.admit("refused", reports)
    assert len(reports.lines) == 1  # nothing held back in the last window: nothing to report
