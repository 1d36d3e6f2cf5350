"""collector_paused: the cyclic collector is off inside, restored after, and what the block
kept is frozen out of later collections; a process that kept bulk data ends without freeing it."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from verdict.heap import collector_paused


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_is_off_inside_and_back_on_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_what_the_block_kept_is_frozen() -> None:
    gc.unfreeze()
    before = gc.get_freeze_count()
    with collector_paused():
        kept = [{"uid": {"type": "Loan", "id": str(i)}} for i in range(1000)]
    assert gc.get_freeze_count() >= before + len(kept)


def test_an_error_inside_restores_the_collector() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="parse failed"), collector_paused():
        raise ValueError("parse failed")
    assert gc.isenabled()


def test_without_freeze_nothing_is_frozen() -> None:
    gc.unfreeze()
    with collector_paused(freeze=False):
        kept = [{"uid": {"type": "Loan", "id": str(i)}} for i in range(1000)]
    assert gc.get_freeze_count() == 0
    assert len(kept) == 1000


def test_the_collector_comes_back_when_the_last_of_two_threads_leaves() -> None:
    """Two reload threads overlap: the first to leave must not turn the collector back on
    under the other, and the last to leave must."""
    gc.enable()
    inside, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with collector_paused(freeze=False):
            inside.set()
            release.wait(5)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    with collector_paused(freeze=False):
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread is still inside
    release.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


KEEPING = """
import atexit, sys
from verdict.heap import exit_if_kept, keep_until_exit
atexit.register(lambda: print("shutdown ran"))
print("output", end="")  # unflushed: a pipe is block-buffered
if sys.argv[1] == "keep":
    keep_until_exit([object() for _ in range(10)])
exit_if_kept(3)
print(" and more")
"""


def test_a_process_that_kept_bulk_data_ends_at_once_with_its_output_flushed() -> None:
    kept = subprocess.run(
        [sys.executable, "-c", KEEPING, "keep"], capture_output=True, text=True, check=False
    )
    assert (kept.returncode, kept.stdout) == (3, "output")  # no shutdown work, nothing after
    went_on = subprocess.run(
        [sys.executable, "-c", KEEPING, "nothing"], capture_output=True, text=True, check=False
    )
    assert (went_on.returncode, went_on.stdout) == (0, "output and more\nshutdown ran\n")
