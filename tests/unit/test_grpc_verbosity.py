"""grpc core's own stderr lines stay out of Verdict's logs unless an operator asks for them."""

from __future__ import annotations

import os
import subprocess
import sys


def verbosity_seen(env: dict[str, str]) -> str:
    code = "import verdict.cli, os; print(os.environ['GRPC_VERBOSITY'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_grpc_core_logs_errors_only_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    assert verbosity_seen(env) == "ERROR"


def test_an_operators_grpc_verbosity_wins() -> None:
    env = {**os.environ, "GRPC_VERBOSITY": "DEBUG"}
    assert verbosity_seen(env) == "DEBUG"
