"""The sample policy suites pass with full coverage: a failing sample suite fails ``make test``."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_sample_suites_pass_with_full_policy_coverage() -> None:
    """``verdict test --stores policies --coverage --min-coverage 100`` exits 0."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "verdict",
            "test",
            "--stores",
            "policies",
            "--coverage",
            "--min-coverage",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "never exercised: none" in done.stdout
    assert " 0 failed " in done.stdout.splitlines()[-1]
