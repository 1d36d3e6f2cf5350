"""The caller's deadline, checked before each costly step of an answer."""

from __future__ import annotations

import time

from verdict.errors import DeadlineExceededError


def check_deadline(deadline: float | None) -> None:
    """Give up on a request whose caller has stopped waiting: its answer would be thrown away,
    and under overload evaluating it anyway only delays the calls that can still be answered."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceededError
