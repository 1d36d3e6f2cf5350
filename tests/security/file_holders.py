"""Other processes that hold a store file (open for writing, or mapped), for the tests of the
reload's question to the kernel about writers (policy/writers.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verdict.policy.writers import ignore_lease_breaks


@contextmanager
def holding(script: str, path: Path, ready: str) -> Iterator[None]:
    """Run ``script`` (given ``path``) in another interpreter until the block ends: it prints
    ``ready`` once it holds the file, then waits for a line on its stdin and exits 0."""
    with subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == ready
        yield
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(10) == 0


@contextmanager
def lease_breaks_ignored() -> Iterator[None]:
    """SIGIO ignored for the block, as the server ignores it, so the kernel may be asked."""
    before = signal.getsignal(signal.SIGIO)
    assert ignore_lease_breaks()
    try:
        yield
    finally:
        signal.signal(signal.SIGIO, before)
