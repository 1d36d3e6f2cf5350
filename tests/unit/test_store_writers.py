"""open_for_writing asks the kernel (a read lease, taken and given back) whether another
process holds a store file open for writing; real files, real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.file_holders import holding, lease_breaks_ignored
from verdict.policy.writers import open_for_writing

HOLD_OPEN = (
    "import sys, time\n"
    "with open(sys.argv[1], 'ab') as f:\n"
    "    f.write(b'// half')\n    f.flush()\n    print('open', flush=True)\n"
    "    sys.stdin.readline()\n"
)


@pytest.fixture(autouse=True)
def _breaks_ignored() -> Iterator[None]:
    with lease_breaks_ignored():
        yield


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "guard.cedar"
    path.write_text("forbid (principal, action, resource);\n")
    return path


def test_a_file_held_open_for_writing_by_another_process_is_named(policy: Path) -> None:
    other = tmp_sibling(policy, "other.cedar")
    with holding(HOLD_OPEN, policy, "open"):
        assert open_for_writing([policy, other]) == [policy]
    assert open_for_writing([policy, other]) == []


def test_the_question_leaves_no_lease_behind(policy: Path) -> None:
    """A lease kept would make the next writer's open wait for the kernel's break time
    (45 s by default); the writer after the question opens at once."""
    assert open_for_writing([policy]) == []
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", f"open({str(policy)!r}, 'ab').close()"], check=True, timeout=20
    )
    assert time.monotonic() - started < 5


def test_this_process_writing_counts_too(policy: Path) -> None:
    with policy.open("ab"):
        assert open_for_writing([policy]) == [policy]
    assert open_for_writing([policy]) == []


def test_a_vanished_file_is_not_being_written(tmp_path: Path) -> None:
    assert open_for_writing([tmp_path / "gone.cedar"]) == []


def test_without_sigio_ignored_nothing_is_asked(policy: Path) -> None:
    """The break notice's default action ends the process: unless it is ignored, the answer
    is 'cannot tell' (the reload relies on its settle alone)."""
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    with policy.open("ab"):
        assert open_for_writing([policy]) is None


def test_a_file_the_kernel_grants_no_lease_on_is_cannot_tell(tmp_path: Path) -> None:
    """A folder named like a policy file (or a FIFO, or NFS) takes no lease: unknown."""
    folder = tmp_path / "odd.cedar"
    folder.mkdir()
    assert open_for_writing([folder]) is None


def tmp_sibling(path: Path, name: str) -> Path:
    sibling = path.parent / name
    sibling.write_text("permit (principal, action, resource);\n")
    return sibling
