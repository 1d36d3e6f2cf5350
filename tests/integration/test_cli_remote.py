"""The CLI as a client of a running server: entities put|delete|get, check and test --server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from tests.processes import ServerProcess, free_port, verdict_server
from tests.security.authn_support import Pki, token_sha256, verdict_app, write_callers

CONTEXT = json.dumps(BASE_CONTEXT)
ZED = {
    "uid": {"type": "Employee", "id": "zed"},
    "attrs": {
        "name": "Zed Zhou",
        "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        "department": "Retail Lending",
        "approval_limit": 0,
        "suspended": False,
    },
    "parents": [{"type": "Role", "id": "loan_officer"}],
}


def verdict(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m verdict ARGS` with ``stdin`` as standard input."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One `verdict serve` (one process, memory store: writes allowed) for this module."""
    with verdict_server() as running:
        yield running


def check(
    target: str, principal: str, *extra: str, resource: str = "Loan::loan-1001"
) -> subprocess.CompletedProcess[str]:
    return verdict(
        "check", "--server", target, "--principal", principal, "--action", "Action::view",
        "--resource", resource, "--context", CONTEXT, *extra,
    )  # fmt: skip


def version_of(line: str) -> int:
    found = re.search(r"entity version (\d+)", line)
    assert found, line
    return int(found[1])


def test_entities_put_get_delete_round_trip(server: ServerProcess, tmp_path: Path) -> None:
    """put (stdin) prints the new version; check --min-version reads it; get prints Cedar JSON;
    delete (uid argument) removes it; get then names it missing, exit 1."""
    target = f"127.0.0.1:{server.port}"
    put = verdict("entities", "put", "--server", target, "-", stdin=json.dumps([ZED]))
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith("1 entity written; entity version ")
    written = version_of(put.stdout)

    allowed = check(target, "Employee::zed", "--min-version", str(written))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "decision: ALLOW" in allowed.stdout

    got = verdict("entities", "get", "--server", target, 'Employee::"zed"')
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == [ZED]

    uids = tmp_path / "uids.json"
    uids.write_text(json.dumps([{"type": "Employee", "id": "zed"}]))
    deleted = verdict("entities", "delete", "--server", target, "--from", str(uids))
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("1 of 1 entity deleted; entity version ")
    assert version_of(deleted.stdout) > written

    gone = verdict("entities", "get", "--server", target, "Employee::zed")
    assert gone.returncode == 1
    assert json.loads(gone.stdout) == []
    assert 'not found: Employee::"zed"' in gone.stderr
    denied = check(target, "Employee::zed", "--min-version", str(version_of(deleted.stdout)))
    assert denied.returncode == 1
    assert "decision: DENY" in denied.stdout


def test_entities_put_refused_by_the_server_exits_two(
    server: ServerProcess, tmp_path: Path
) -> None:
    """An entity the schema rejects: the server's INVALID_ARGUMENT as one line, exit 2."""
    bad = tmp_path / "bad.json"
    broken = json.loads(json.dumps(ZED))
    broken["attrs"]["approval_limit"] = "lots"
    bad.write_text(json.dumps([broken]))
    result = verdict("entities", "put", "--server", f"127.0.0.1:{server.port}", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("error: entities_json")
    assert "Traceback" not in result.stderr


def test_entities_put_names_the_place_of_malformed_json(server: ServerProcess) -> None:
    """Malformed input is refused before any call, with line and column."""
    result = verdict("entities", "put", "--server", f"127.0.0.1:{server.port}", "-", stdin="[\n{")
    assert result.returncode == 2
    assert result.stderr.startswith("error: standard input:2:2: not valid JSON")


def test_check_server_answers_as_the_files_do(server: ServerProcess) -> None:
    """check --server prints the decision, determining policies and policy version the
    offline check prints, with the same exit code."""
    for principal, resource, code in (
        ("Employee::olivia", "Loan::loan-1001", 0),
        ("Employee::uma", "Loan::loan-2001", 1),
    ):
        remote = check(f"127.0.0.1:{server.port}", principal, resource=resource)
        offline = verdict(
            "check", "--stores", str(POLICIES), "--principal", principal, "--action",
            "Action::view", "--resource", resource, "--context", CONTEXT,
        )  # fmt: skip
        assert remote.returncode == offline.returncode == code, remote.stderr
        # Offline adds each policy's file and description; the rest is the same.
        shown = [line.split("  (")[0] for line in offline.stdout.splitlines()]
        assert remote.stdout.splitlines()[: len(shown)] == shown


def test_check_server_unreachable_is_one_line() -> None:
    """Nothing listens at --server: exit 2 and a line naming the address."""
    target = f"127.0.0.1:{free_port()}"
    result = verdict(
        "check", "--server", target, "--principal", "Employee::olivia", "--action",
        "Action::view", "--resource", "Loan::loan-1001", "--timeout", "2",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot reach the server at {target} (UNAVAILABLE)"


def test_test_server_runs_the_suites_through_the_server(server: ServerProcess) -> None:
    """`verdict test --server` judges the server's answers: the sample suites pass, with
    coverage from the determining policies the server returns."""
    remote = verdict(
        "test", "--stores", str(POLICIES), "--server", f"127.0.0.1:{server.port}", "--coverage"
    )
    offline = verdict("test", "--stores", str(POLICIES), "--coverage")
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert (
        remote.stdout.splitlines()[-1].split(" (")[0]
        == offline.stdout.splitlines()[-1].split(" (")[0]
    )
    # The coverage table: the same policies exercised by the same number of cases.
    assert remote.stdout.splitlines()[:-1] == offline.stdout.splitlines()[:-1]


def test_test_server_reports_a_failing_case(server: ServerProcess, tmp_path: Path) -> None:
    """A case the server answers otherwise fails with exit 1, reported as offline."""
    suite = tmp_path / "wrong.yaml"
    suite.write_text(
        "name: wrong\nstore: lending\ncontext: " + CONTEXT + "\ncases:\n"
        "  - name: olivia may not view\n    principal: Employee::olivia\n"
        "    action: Action::view\n    resource: Loan::loan-1001\n    expect: deny\n"
    )
    result = verdict(
        "test", "--stores", str(POLICIES), "--server", f"127.0.0.1:{server.port}", str(suite)
    )
    assert result.returncode == 1
    assert "wrong / olivia may not view" in result.stdout
    assert "expected DENY" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("0 passed, 1 failed")


TOKEN = "cli-test-token"


async def test_tls_and_bearer_token_flags(tmp_path: Path) -> None:
    """Over TLS with a callers file: --tls-ca and --token (or VERDICT_TOKEN) reach the server,
    --tls-server-name names the certificate when --server is an IP; no token: refused, exit 2."""
    pki = Pki.create(tmp_path)
    callers = write_callers(
        tmp_path,
        '[[callers]]\nid = "cli"\nmethods = ["decisions", "entity-reads"]\n'
        f'stores = ["lending"]\ntoken_sha256 = ["{token_sha256(TOKEN)}"]\n',
    )
    async with verdict_app(
        tls_cert=pki.server_cert, tls_key=pki.server_key, callers_file=callers
    ) as app:
        assert app.server is not None
        tls = ("--tls-ca", str(pki.ca_file))
        ask = ("--principal", "Employee::olivia", "--action", "Action::view")
        loan = ("--resource", "Loan::loan-1001", "--context", CONTEXT)
        by_name = ("--server", f"localhost:{app.server.port}", *tls)
        allowed = await asyncio.to_thread(verdict, "check", *by_name, *ask, *loan, "--token", TOKEN)
        assert allowed.returncode == 0, allowed.stderr
        by_ip = ("--server", f"127.0.0.1:{app.server.port}", *tls, "--tls-server-name", "localhost")
        read = await asyncio.to_thread(
            verdict, "entities", "get", *by_ip, "Employee::olivia", env={"VERDICT_TOKEN": TOKEN}
        )
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)[0]["uid"] == {"type": "Employee", "id": "olivia"}
        refused = await asyncio.to_thread(verdict, "check", *by_name, *ask, *loan)
        assert refused.returncode == 2
        assert refused.stderr.strip() == "error: UNAUTHENTICATED: unauthenticated"


def test_the_servers_field_names_are_shown_as_flags(server: ServerProcess) -> None:
    """An unknown store is `--store 'lendin'` (no list of the server's stores: it keeps them
    from callers), for check and entities put alike; a request the server refuses reads as
    the offline check's refusal of it (`context_json: ...` both ways)."""
    target = f"127.0.0.1:{server.port}"
    checked = check(target, "Employee::uma", "--store", "lendin")
    assert (checked.returncode, checked.stderr) == (
        2,
        "error: --store 'lendin': the server has no such policy store\n",
    )
    put = verdict("entities", "put", "--server", target, "--store", "lendin", "-", stdin="[]")
    assert (put.returncode, put.stderr) == (
        2,
        "error: --store 'lendin': the server has no such policy store\n",
    )
    request = (
        "--principal", "Employe::uma", "--action", "Action::view",
        "--resource", "Loan::loan-1001", "--context", json.dumps(BASE_CONTEXT),
    )  # fmt: skip
    remote = verdict("check", "--server", target, *request)
    offline = verdict("check", "--stores", str(POLICIES), *request)
    assert remote.returncode == offline.returncode == 2
    assert remote.stderr == offline.stderr
    assert remote.stderr.startswith("error: principal: entity type Employe is not declared")
    bad_context = ("--principal", "Employee::uma", *request[2:-1], '{"mfa": tru}')
    remote = verdict("check", "--server", target, *bad_context)
    offline = verdict("check", "--stores", str(POLICIES), *bad_context)
    assert (
        remote.stderr
        == offline.stderr
        == ("error: context_json: is not valid JSON at line 1 column 9\n")
    )


def test_entity_counts_agree_in_number(server: ServerProcess) -> None:
    """`0 of 2 entities deleted`, `1 of 1 entity deleted`: the noun follows the count."""
    target = f"127.0.0.1:{server.port}"
    none = verdict("entities", "delete", "--server", target, "Employee::nobody", "Employee::none")
    assert none.returncode == 0, none.stderr
    assert none.stdout.startswith("0 of 2 entities deleted; entity version ")
