"""The one place that holds the current policy snapshot; replaced by a single assignment."""

from __future__ import annotations

from verdict.policy.snapshot import PolicySnapshot


class PolicyHolder:
    """Holds the current snapshot. Readers take ``current`` once per decision and keep it.

    Swapping is one attribute assignment, so a decision sees either the old or the new snapshot
    in full, never a mix; a reload that fails never reaches ``swap``.
    """

    def __init__(self, snapshot: PolicySnapshot) -> None:
        self._current = snapshot

    @property
    def current(self) -> PolicySnapshot:
        """The snapshot new decisions are made against."""
        return self._current

    def swap(self, snapshot: PolicySnapshot) -> PolicySnapshot:
        """Install ``snapshot`` and return the one it replaced."""
        previous, self._current = self._current, snapshot
        return previous
