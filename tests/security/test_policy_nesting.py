"""Deeply nested Cedar text in a store folder is refused by name before cedarpy parses it.

cedarpy's parser crashed the process (SIGSEGV) on ~1,000 nested brackets in a policy
(parentheses, sets, records, ``!(``/``-(`` groups), ~10,000 chained ``if``s (nested or an
``else if`` ladder) and ~3,000 nested record types in a Cedar-syntax schema: `verdict serve`
died at its start and at the reload that read such a file, and `verdict validate` and `verdict
fmt` died the same way. Now every Cedar text is scanned first (``verdict.cedar_nesting``) and
refused past 100 nested brackets or 500 ``if``s in one statement, naming the file and line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.processes import free_port
from tests.security.serve_process import running_server, serve_command
from tests.security.test_attack_lifecycle import allowed_case, decide, reload
from tests.stores import lending_copy
from verdict.cedar_nesting import (
    MAX_BRACKET_DEPTH,
    MAX_IFS_PER_STATEMENT,
    MAX_OPERATORS_PER_STATEMENT,
    nesting_problem,
)
from verdict.client import ALLOW

HEAD = '@id("deep")\npermit (principal, action, resource) when {\n'
# Each crashed cedarpy's parser when handed to it (SIGSEGV), at these sizes.
DEEP_CONDITIONS = {
    "parentheses": "(" * 2000 + "true" + ")" * 2000,
    "sets": "[" * 2000 + "1" + "]" * 2000 + " != []",
    "records": "{a: " * 2000 + "1" + "}" * 2000 + " != {}",
    "not-groups": "!(" * 2000 + "false" + ")" * 2000,
    "nested ifs": "if true then " * 20_000 + "true" + " else false" * 20_000,
    "else-if ladder": "if false then false else " * 20_000 + "true",
}
BRACKETS = f"brackets nested deeper than {MAX_BRACKET_DEPTH} levels"
IFS = f"more than {MAX_IFS_PER_STATEMENT} `if` expressions in one statement"


def deep_policy(condition: str) -> str:
    return f"{HEAD}{condition}\n}};\n"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def verdict(*args: str) -> list[str]:
    return [sys.executable, "-m", "verdict", *args]


def test_the_bounds_are_exact_and_strings_and_comments_do_not_count() -> None:
    depth = MAX_BRACKET_DEPTH - 1  # inside the condition's own braces
    assert nesting_problem(deep_policy("(" * depth + "true" + ")" * depth)) is None
    assert nesting_problem(deep_policy("(" * (depth + 1) + "true" + ")" * (depth + 1))) == BRACKETS
    quoted = '"' + "(" * 5000 + '\\" [' + '"'
    assert nesting_problem(deep_policy(f"{quoted} == {quoted}")) is None
    assert nesting_problem(HEAD + "// " + "{" * 5000 + "\ntrue\n};\n") is None
    ifs = "if true then " * MAX_IFS_PER_STATEMENT + "true" + " else false" * MAX_IFS_PER_STATEMENT
    assert nesting_problem(deep_policy(ifs)) is None
    assert nesting_problem(deep_policy("if true then " + ifs + " else false")) == IFS
    # The count is per statement: many policies with a few ifs each are fine.
    assert nesting_problem(deep_policy(ifs) * 3) is None
    assert nesting_problem(deep_policy("iffy == 1") * 1000) is None  # not the keyword
    # An unterminated string hides the rest of the text, as it does from Cedar.
    assert nesting_problem(HEAD + '"' + "(" * 5000) is None


@pytest.mark.parametrize("name", list(DEEP_CONDITIONS))
def test_validate_and_fmt_refuse_a_deep_policy_by_file_and_line(tmp_path: Path, name: str) -> None:
    stores = lending_copy(tmp_path)
    path = stores / "lending" / "deep.cedar"
    path.write_text("// a comment first\n" + deep_policy(DEEP_CONDITIONS[name]))
    expected = IFS if "if" in name else BRACKETS
    validated = run(verdict("validate", "--stores", str(stores)))
    assert validated.returncode == 1, (validated.returncode, validated.stderr[-500:])
    assert f"lending/deep.cedar:4: syntax error: {expected}" in validated.stderr
    formatted = run(verdict("fmt", "--stores", str(stores), "--check"))
    assert formatted.returncode == 2, (formatted.returncode, formatted.stderr[-500:])
    assert expected in formatted.stderr


def test_a_deep_cedar_schema_is_refused_by_name(tmp_path: Path) -> None:
    stores = lending_copy(tmp_path)
    schema = stores / "lending" / "schema.cedarschema"
    nested = "{ a: " * 5000 + "Long" + " }" * 5000
    schema.write_text(schema.read_text() + f"\nentity Deep {{ a: {nested} }};\n")
    validated = run(verdict("validate", "--stores", str(stores)))
    assert validated.returncode == 1, (validated.returncode, validated.stderr[-500:])
    assert f"invalid schema: {BRACKETS}" in validated.stderr


def test_serve_refuses_to_start_on_a_deep_policy(tmp_path: Path) -> None:
    stores = lending_copy(tmp_path)
    (stores / "lending" / "deep.cedar").write_text(deep_policy(DEEP_CONDITIONS["sets"]))
    served = run(serve_command(stores, free_port(), "--workers", "1"))
    assert served.returncode == 2, (served.returncode, served.stderr[-500:])
    assert f"lending/deep.cedar:3: syntax error: {BRACKETS}" in served.stderr


async def test_a_deep_policy_reloaded_into_a_running_server_fails_and_the_last_good_serves(
    tmp_path: Path,
) -> None:
    stores = lending_copy(tmp_path)
    with running_server(stores, "--workers", "1") as (process, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await decide(channel, allowed_case())).decision == ALLOW
            (stores / "lending" / "deep.cedar").write_text(
                deep_policy(DEEP_CONDITIONS["else-if ladder"])
            )
            state = (await reload(channel))["lending"]
            problems = [(p.file, p.line, p.message) for p in state.problems]
            assert problems == [("lending/deep.cedar", 3, f"syntax error: {IFS}")], state
            assert process.poll() is None
            assert (await decide(channel, allowed_case())).decision == ALLOW


def test_operators_are_bounded_per_policy_statement_only() -> None:
    """Chained operators crashed cedarpy's parse from ~16,400 (attack round 18); strings,
    comments and schemas (``Set<Long>``) do not count, and the count is per statement."""
    limit = MAX_OPERATORS_PER_STATEMENT

    def chain(count: int) -> str:
        """A policy of ``count`` operators: ``1 + 1 + ... == 2``."""
        return deep_policy("1" + " + 1" * (count - 1) + " == 2")

    assert nesting_problem(chain(limit), count_operators=True) is None
    refused = nesting_problem(chain(limit + 1), count_operators=True)
    assert refused == f"more than {limit:,} operators in one statement"
    assert nesting_problem(chain(limit + 1)) is None  # not counted: a schema's text
    assert nesting_problem(chain(limit // 2) * 4, count_operators=True) is None
    quoted = '"' + "a.b && c + " * limit + '"'
    assert nesting_problem(deep_policy(f"{quoted} == {quoted}"), count_operators=True) is None
    assert (
        nesting_problem(HEAD + "// " + "&&" * limit + "\ntrue\n};\n", count_operators=True) is None
    )
