"""Tests of the verdict command line, run as real subprocesses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES, ROOT
from tests.processes import free_port, verdict_server
from tests.stores import write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb

CONTEXT = json.dumps(BASE_CONTEXT)
MFA_ONE = '{"mfa": 1, "now": "2025-03-04"}'


def verdict(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check(
    principal: str, action: str, resource: str, *extra: str, stores: Path = POLICIES
) -> subprocess.CompletedProcess[str]:
    return verdict(
        "check",
        "--stores",
        str(stores),
        "--store",
        "lending",
        "--principal",
        principal,
        "--action",
        action,
        "--resource",
        resource,
        *extra,
    )


def test_check_allow_exits_zero() -> None:
    """An allowed request prints ALLOW, the determining policy with its location, exit 0."""
    result = check("Employee::olivia", "Action::disburse", "Loan::loan-1005", "--context", CONTEXT)
    assert result.returncode == 0, result.stderr
    assert "decision: ALLOW" in result.stdout
    assert "disburse-partner-loans  (lending/loans/disbursement.cedar:" in result.stdout


def test_check_deny_exits_one() -> None:
    """A denied request prints DENY and the forbid that fired, exit 1."""
    result = check("Employee::uma", "Action::view", "Loan::loan-2001", "--context", CONTEXT)
    assert result.returncode == 1
    assert "decision: DENY" in result.stdout
    assert "forbid-cross-partner-loan-access" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Employee-olivia", "Action::view", "Loan::loan-1001"), "--principal: must be written"),
        (
            ("Employee::olivia", "Action::fly", "Loan::loan-1001"),
            'error: action: Action::"fly" is not declared in the schema\n',
        ),
        (
            ("Employee::olivia", "Action::veiw", "Loan::loan-1001"),
            'error: action: Action::"veiw" is not declared; did you mean Action::"view"?\n',
        ),
        (
            ("Employe::olivia", "Action::view", "Loan::loan-1001"),
            "error: principal: entity type Employe is not declared in the schema; "
            'did you mean Employee? (Action::"view" allows Borrower, Employee)\n',
        ),
        (
            ("Foo::olivia", "Action::view", "Loan::loan-1001"),
            "error: principal: entity type Foo is not declared in the schema "
            '(Action::"view" allows Borrower, Employee)\n',
        ),
        (
            ("Borrower::alice", "Action::approve", "Loan::loan-1001"),
            'error: principal: entity type Borrower is not allowed for Action::"approve" '
            "(allowed: Employee)\n",
        ),
        (
            ("Employee::olivia", "Action::view", "Loan::loan-1001", "--context", "[]"),
            "context_json: must be a JSON object",
        ),
        (
            ("Employee::olivia", "Action::view", "Loan::loan-1001", "--context", '{"mfa": true}'),
            "error: context_json: attribute now is missing (the schema requires a datetime "
            '(e.g. "2025-03-04T10:00:00Z"))\n',
        ),
        (
            ("Employee::olivia", "Action::view", "Loan::loan-1001", "--context", MFA_ONE),
            "error: context_json: attribute mfa must be a Bool\n",
        ),
        (
            ("Employee::olivia", "Action::view", "Loan::loan-1001", "--context", '{\n"mfa": tru}'),
            "is not valid JSON at line 2 column 8",
        ),
    ],
)
def test_check_errors_exit_two(args: tuple[str, ...], message: str) -> None:
    """Bad arguments and requests the schema rejects exit 2 with a message naming the field."""
    result = check(*args) if "--context" in args else check(*args, "--context", CONTEXT)
    assert result.returncode == 2
    assert message in result.stderr


def test_check_suggests_the_nearest_action() -> None:
    """The README's command with a typo in the action: the did-you-mean line, exit 2."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "verdict", "check", "--stores", "policies"),
            *("--store", "lending", "--principal", "Employee::uma"),
            *("--action", "Action::veiw", "--resource", "Loan::loan-1001"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        'error: action: Action::"veiw" is not declared; did you mean Action::"view"?\n'
    )


def test_check_reports_evaluation_errors_in_full(tmp_path: Path) -> None:
    """Offline, the full Cedar error text is shown to the engineer."""
    write_store(
        tmp_path,
        "lending",
        {
            "p.cedar": '@id("all") permit(principal, action, resource);\n'
            '@id("f") forbid(principal, action, resource) when { principal.x };'
        },
    )
    result = check("User::u", "Action::a", "Doc::d", stores=tmp_path)
    assert result.returncode == 1
    assert "error in policy f: error while evaluating policy `f`" in result.stdout
    assert "on_evaluation_error = deny" in result.stdout


def test_validate_reports_every_problem_with_location(tmp_path: Path) -> None:
    """validate lists file:line problems across stores and exits 1; a good tree exits 0."""
    write_store(tmp_path, "a", {"x.cedar": "permit(principal, action, resource);\n\nnope;"})
    write_store(tmp_path, "b", {"entities.json": "[{]"})
    result = verdict("validate", "--stores", str(tmp_path))
    assert result.returncode == 1
    assert "a/x.cedar:3: syntax error" in result.stderr
    ok = verdict("validate", "--stores", str(POLICIES))
    assert ok.returncode == 0, ok.stderr
    assert "lending: 27 policies (templates 1)" in ok.stdout


def test_validate_accepts_several_stores_without_a_default(tmp_path: Path) -> None:
    """validate checks every store; only a named default store must exist."""
    for name in ("a", "b"):
        write_store(tmp_path, name, {"p.cedar": "permit(principal, action, resource);"})
    assert verdict("validate", "--stores", str(tmp_path)).returncode == 0
    missing = verdict("validate", "--stores", str(tmp_path), "--default-store", "c")
    assert missing.returncode == 1
    assert "default store 'c' is not one of ['a', 'b']" in missing.stderr


def test_version() -> None:
    """`verdict --version` prints the package version and exits 0."""
    result = verdict("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("verdict ")


def test_version_imports_no_command() -> None:
    """`--version` answers before the commands are imported (they bring grpc, Cedar and Redis,
    most of a second), and says the same as the full parser's --version."""
    code = (
        "import sys; from verdict.cli import main; main(['--version']); "
        "print(sorted(m for m in ('grpc', 'cedarpy', 'redis', 'verdict.app') if m in sys.modules))"
    )
    quick = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    printed, imported = quick.stdout.strip().splitlines()
    assert imported == "[]"
    # With another argument the full parser answers --version itself.
    assert printed == verdict("--version", "--help").stdout.strip()


def test_every_command_has_help() -> None:
    """--help works for the program and each subcommand."""
    for args in (
        (),
        ("serve",),
        ("check",),
        ("validate",),
        ("test",),
        ("entities",),
        ("entities", "load"),
        ("entities", "export"),
        ("entities", "put"),
        ("entities", "delete"),
        ("entities", "get"),
        ("healthcheck",),
        ("fmt",),
        ("version",),
        ("seal",),
        ("diff",),
        ("audit",),
        ("audit", "verify"),
        ("audit", "replay"),
    ):
        result = verdict(*args, "--help")
        assert result.returncode == 0
        assert "usage: verdict" in result.stdout


def test_serve_answers_and_shuts_down_gracefully_on_sigterm() -> None:
    """`verdict serve` answers over gRPC, then exits 0 on SIGTERM after draining."""
    with verdict_server(env={"VERDICT_MAX_BATCH_SIZE": "3"}) as server:
        reply = server.client.is_authorized(
            "Employee::olivia", "Action::view", "Loan::loan-1001", context=BASE_CONTEXT
        )
        assert reply.decision == pb.DECISION_ALLOW
        with pytest.raises(grpc.RpcError) as info:  # the env var reached the settings
            server.client.batch([pb.IsAuthorizedRequest()] * 4)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    events = [json.loads(line)["event"] for line in server.stderr.splitlines() if line[:1] == "{"]
    # No callers file and no TLS: the open-port warning comes first, once (issue 8).
    assert events[:2] == ["authorization_disabled", "server_started"]
    assert events[-2:] == ["shutdown_started", "shutdown_finished"]


def test_serve_refuses_to_start_with_a_broken_store(tmp_path: Path) -> None:
    """A store that fails to load stops the server at startup with file:line, exit 2."""
    write_store(
        tmp_path,
        "s",
        {
            "p.cedar": '@id("x") permit(principal, action, resource);\n'
            '@id("x") permit(principal, action, resource);'
        },
    )
    result = verdict("serve", "--stores", str(tmp_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "s/p.cedar:2: duplicate policy id 'x'" in result.stderr


def test_the_example_runs_against_a_server() -> None:
    """examples/decide.py answers as the README says, against a real server process."""
    example = POLICIES.parent / "examples" / "decide.py"
    with verdict_server() as server:
        result = subprocess.run(
            [sys.executable, str(example), "--target", f"127.0.0.1:{server.port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("single: ALLOW ['disburse-partner-loans'] sha256:")
    assert (
        lines[2] == "batch:  Employee::uma Action::view Loan::loan-2001 -> DENY "
        "['forbid-cross-partner-loan-access']"
    )


def test_the_example_takes_a_bare_address_and_says_when_nothing_serves_there() -> None:
    """`decide.py HOST:PORT` works like `--target`; with no server: one line, exit 2."""
    example = POLICIES.parent / "examples" / "decide.py"
    with verdict_server() as server:
        answered = subprocess.run(
            [sys.executable, str(example), f"127.0.0.1:{server.port}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.startswith("single: ALLOW")
    target = f"127.0.0.1:{free_port()}"
    refused = subprocess.run(
        [sys.executable, str(example), target],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: cannot ask Verdict at {target} (UNAVAILABLE); is `make run` up?\n"
    )


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("1.5", "contains a fractional number; Cedar has no floats (use decimal)"),
        ("9" * 5_000, "contains an integer outside Cedar's 64-bit range"),  # was a traceback
    ],
)
def test_a_refused_number_in_an_entities_file_is_placed_at_its_entity(
    tmp_path: Path, number: str, problem: str
) -> None:
    """The strict parse names no item for a refused number; the line is the one where the
    entity holding it starts (it was line 1, and a 5,000-digit integer crashed the placing)."""
    stores = tmp_path / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    path = stores / "lending" / "entities.json"
    lines = path.read_text().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if '"id": "uma"' in line and "attrs" in line)
    lines[target] = lines[target].replace('"attrs": {', f'"attrs": {{"zz": {number}, ', 1)
    path.write_text("".join(lines))
    result = verdict("validate", "--stores", str(stores))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"error: lending/entities.json:{target + 1}: invalid entities: entities: {problem}"
    )
