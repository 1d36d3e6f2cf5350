"""docs/api.md's Python examples run, and their assertions hold, against live server processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.processes import verdict_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DOC_TARGET = "127.0.0.1:50051"
# An example is a python block right after an <!-- example: KIND --> marker; KIND says which
# server it needs: "open" (no callers file, as `make run`) or "callers" (the doc's callers.toml).
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)```", re.DOTALL)
CALLERS_TOML = re.compile(r"```toml\n(\[\[callers\]\].*?)```", re.DOTALL)


def examples(kind: str) -> list[str]:
    """The code of the doc's examples of ``kind``, in page order."""
    return [code for found, code in EXAMPLE.findall(DOC.read_text()) if found == kind]


def run_example(code: str, port: int) -> None:
    """Run one example against the server on ``port``; it must exit 0 (its asserts held)."""
    assert DOC_TARGET in code
    done = subprocess.run(
        [sys.executable, "-c", code.replace(DOC_TARGET, f"127.0.0.1:{port}")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"example failed:\n{code}\n{done.stderr}"


def test_open_examples_run_against_a_server() -> None:
    """Decisions, per-item batch errors, read-your-writes, admin and health work as shown."""
    codes = examples("open")
    assert len(codes) == 4
    with verdict_server() as server:
        for code in codes:
            run_example(code, server.port)


def test_callers_example_runs_against_a_server_with_the_docs_callers_file(tmp_path: Path) -> None:
    """UNAUTHENTICATED without a token, PERMISSION_DENIED outside the grant, as the doc says."""
    [codes, toml] = examples("callers"), CALLERS_TOML.findall(DOC.read_text())
    assert len(codes) == 1
    assert len(toml) == 1
    callers = tmp_path / "callers.toml"
    callers.write_text(toml[0])
    with verdict_server("--callers-file", str(callers)) as server:
        run_example(codes[0], server.port)
