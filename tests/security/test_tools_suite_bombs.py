"""Hostile policy test suites fail to load (exit 2, file:line) instead of running without end."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from verdict.policytest.loader import MAX_CASES, MAX_SENT_VALUES, MAX_SUITE_BYTES

CASE = """\
  - name: {name}
    principal: Employee::olivia
    action: Action::disburse
    resource: Loan::loan-1005
    expect: allow
"""


def limit_memory() -> None:
    """Cap the child's address space, so that an old, unbounded loader fails fast."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def verdict_test(suite: Path) -> subprocess.CompletedProcess[str]:
    """`verdict test` on the sample stores and one suite file, with a 20 s timeout."""
    return subprocess.run(
        [sys.executable, "-m", "verdict", "test", "--stores", str(POLICIES), str(suite)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        preexec_fn=limit_memory,
    )


def assert_load_error(suite: Path, line: int, words: str) -> None:
    """The run exits 2 with one diagnostic ``suite:line: ...words...``."""
    result = verdict_test(suite)
    assert result.returncode == 2, result.stdout + result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {suite}:{line}: ")
    assert words in first


@pytest.fixture
def suite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A path for the suite; the working directory is its folder, so paths print as given."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "suite.yaml"


def test_recursive_alias_is_a_load_error(suite_file: Path) -> None:
    """An alias inside its own anchor (r: &r [*r, *r]) is refused at its line."""
    context = "    context: &r {r: [*r, *r]}\n"
    suite_file.write_text("name: bomb\ncases:\n" + CASE.format(name="x") + context)
    assert_load_error(Path(suite_file.name), 8, "alias inside its own anchor")


def test_billion_laughs_is_a_load_error(suite_file: Path) -> None:
    """Nine levels of nine aliases each (387 million values) are refused at the expanding line."""
    lines = ["name: bomb", "context:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    suite_file.write_text("\n".join(lines) + "\ncases:\n" + CASE.format(name="x"))
    assert_load_error(Path(suite_file.name), 9, "aliases expand this to more than")


def test_shared_context_times_cases_is_a_load_error(tmp_path: Path) -> None:
    """A large suite context copied into many cases is refused at the case crossing the bound."""
    per_case = MAX_SENT_VALUES // 1000
    context = {**BASE_CONTEXT, "pad": list(range(per_case))}
    cases = [
        {
            "name": f"c{i}",
            "principal": "Employee::olivia",
            "action": "Action::disburse",
            "resource": "Loan::loan-1005",
            "expect": "allow",
        }
        for i in range(2000)
    ]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "amp", "context": context, "cases": cases}, indent=1))
    result = verdict_test(suite)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "send more than" in result.stderr
    assert f"{suite}:" in result.stderr


def test_too_many_cases_is_a_load_error(suite_file: Path) -> None:
    """A suite with more than MAX_CASES cases is refused where its cases begin."""
    cases = "".join(CASE.format(name=f"c{i}") for i in range(MAX_CASES + 1))
    suite_file.write_text("name: many\ncases:\n" + cases)
    assert_load_error(Path(suite_file.name), 3, f"at most {MAX_CASES}")


def test_oversized_suite_is_a_load_error(suite_file: Path) -> None:
    """A suite file larger than MAX_SUITE_BYTES is refused before it is parsed."""
    padding = "# " + "x" * 1000 + "\n"
    suite_file.write_text("name: big\n" + padding * (MAX_SUITE_BYTES // len(padding) + 1))
    assert_load_error(Path(suite_file.name), 0, "larger than the limit")


def test_deeply_nested_json_is_a_load_error(tmp_path: Path) -> None:
    """JSON nested deeper than Python's parser can follow is a load error, not a traceback."""
    suite = tmp_path / "deep.json"
    suite.write_text('{"name": "deep", "context": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    result = verdict_test(suite)
    assert result.returncode == 2, result.stderr
    assert f"{suite}:1: invalid JSON: nested too deeply" in result.stderr
