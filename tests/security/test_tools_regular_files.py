"""`verdict test` reads suites and their entity files only when they are regular files (14.9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import POLICIES

SUITE = """\
name: fifo
entities: {entities}
cases:
  - name: x
    principal: Employee::olivia
    action: Action::disburse
    resource: Loan::loan-1005
    expect: deny
"""


def verdict_test(*args: str) -> subprocess.CompletedProcess[str]:
    """`verdict test` with ``args``; a hang shows up as TimeoutExpired after 15 s."""
    return subprocess.run(
        [sys.executable, "-m", "verdict", "test", *args],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def test_suite_fifo_named_on_the_command_line(tmp_path: Path) -> None:
    """A FIFO given as the suite file is a load error naming it, not a hang."""
    suite = tmp_path / "suite.yaml"
    os.mkfifo(suite)
    result = verdict_test("--stores", str(POLICIES), str(suite))
    assert result.returncode == 2
    assert f"{suite}:0: not a regular file" in result.stderr


def test_suite_fifo_found_in_a_tests_folder(tmp_path: Path) -> None:
    """A FIFO named like a suite in a store's tests/ is reported, not read and not skipped."""
    shutil.copytree(POLICIES / "lending", tmp_path / "lending")
    os.mkfifo(tmp_path / "lending" / "tests" / "zz.yaml")
    result = verdict_test("--stores", str(tmp_path))
    assert result.returncode == 2
    assert "lending/tests/zz.yaml:0: not a regular file" in result.stderr


def test_suite_entities_fifo(tmp_path: Path) -> None:
    """A FIFO named by a suite's entities: is a load error at that key, not a hang."""
    os.mkfifo(tmp_path / "people.json")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(entities="people.json"))
    result = verdict_test("--stores", str(POLICIES), str(suite))
    assert result.returncode == 2
    assert f"{suite}:2: {tmp_path / 'people.json'}:0: invalid entities: not a regular file" in (
        result.stderr
    )
