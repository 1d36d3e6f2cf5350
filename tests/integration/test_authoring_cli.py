"""The authoring commands through a subprocess: fmt, version, diff and validate's warnings."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.test_cli import verdict
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request

FREEZE = '@id("freeze")\nforbid (principal, action, resource);\n'


def copy_lending(folder: Path) -> Path:
    """A stores folder holding a copy of the lending store; returns the stores folder."""
    shutil.copytree(POLICIES / "lending", folder / "lending")
    return folder


def test_fmt_check_lists_then_fmt_rewrites_keeping_comments(tmp_path: Path) -> None:
    """An unformatted file is listed by --check (exit 1, file unchanged); fmt rewrites it with
    its comment and annotations; --check then exits 0."""
    stores = copy_lending(tmp_path)
    messy = stores / "lending" / "messy.cedar"
    text = (
        '// keep me\n@id("messy")   @description("d")\n'
        "forbid(principal,action,resource)  when{false};"
    )
    messy.write_text(text)
    checked = verdict("fmt", "--check", "--stores", str(stores))
    assert checked.returncode == 1
    assert f"{messy}: not formatted" in checked.stdout
    assert messy.read_text() == text
    assert verdict("fmt", "--stores", str(stores)).returncode == 0
    rewritten = messy.read_text()
    assert rewritten.startswith("// keep me\n")
    assert '@id("messy")' in rewritten
    assert "forbid (" in rewritten
    assert verdict("fmt", "--check", "--stores", str(stores)).returncode == 0


def test_fmt_refuses_a_file_it_cannot_parse(tmp_path: Path) -> None:
    """A policy file with a syntax error is named, left alone, and the exit code is 2."""
    stores = copy_lending(tmp_path)
    broken = stores / "lending" / "broken.cedar"
    broken.write_text("permit(principal, action, resource")
    result = verdict("fmt", "--stores", str(stores))
    assert result.returncode == 2
    assert str(broken) in result.stderr
    assert broken.read_text() == "permit(principal, action, resource"


def test_fmt_names_the_line_of_a_syntax_error(tmp_path: Path) -> None:
    """Cedar's formatter gives no position; fmt says where, as a load would (line 6 here,
    the second policy's bad condition), and leaves the file alone."""
    stores = copy_lending(tmp_path)
    broken = stores / "lending" / "broken.cedar"
    text = (
        '@id("a")\npermit(principal, action, resource);\n\n'
        '@id("b")\nforbid(principal, action, resource)\nwhen { principal.x == };\n'
    )
    broken.write_text(text)
    result = verdict("fmt", "--check", "--stores", str(stores))
    assert result.returncode == 2
    assert f"error: {broken}:6: syntax error" in result.stderr
    assert broken.read_text() == text


async def test_version_is_what_the_server_reports() -> None:
    """`verdict version` prints each store with the policy_version of the server's decisions."""
    printed = verdict("version", "--stores", str(POLICIES))
    assert printed.returncode == 0
    store, version = printed.stdout.split()
    case = lending_cases()[0]
    async with verdict_app() as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            reply = await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                build_request(case.principal, case.action, case.resource, context=case.context)
            )
    assert (store, version) == ("lending", reply.policy_version)


def test_diff_lists_policy_changes_and_flipped_decisions(tmp_path: Path) -> None:
    """Against a tree that adds a forbid-all, changes one policy, removes another and only
    reformats a third: +, ~ and - by id (nothing for the reformat), and every ALLOW case flips
    to DENY by freeze; --exit-code turns flips into exit 1."""
    old = copy_lending(tmp_path / "old")
    new = copy_lending(tmp_path / "new")
    lending = new / "lending"
    (lending / "freeze.cedar").write_text(FREEZE)
    staff = (lending / "staff.cedar").read_text()
    staff = staff.replace('"senior_underwriter" ||', '"senior_underwriter" || false ||', 1)
    (lending / "staff.cedar").write_text(staff)
    approval = (lending / "loans" / "approval.cedar").read_text()
    (lending / "loans" / "approval.cedar").write_text(approval.replace("\n", "\n\n"))
    disbursement = lending / "loans" / "disbursement.cedar"
    disbursement.unlink()
    result = verdict("diff", "--stores", str(old), "--against", str(new))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  + freeze (lending/freeze.cedar:1)" in out
    assert "  ~ staff-view-partner-loans (lending/staff.cedar:3)" in out
    assert "  - disburse-partner-loans (lending/loans/disbursement.cedar:" in out
    assert "approval" not in out.split("decisions that flip")[0].replace("lending/loans", "")
    flips = [line for line in out.splitlines() if line.startswith("    ")]
    assert flips
    assert all("-> DENY by freeze" in line for line in flips), flips
    strict = verdict("diff", "--stores", str(old), "--against", str(new), "--exit-code")
    assert strict.returncode == 1


def test_diff_of_identical_trees_is_quiet(tmp_path: Path) -> None:
    """The same files on both sides: unchanged, exit 0 even with --exit-code."""
    result = verdict("diff", "--stores", str(POLICIES), "--against", str(POLICIES), "--exit-code")
    assert result.returncode == 0
    assert result.stdout.startswith("lending: unchanged (sha256:")


def test_validate_warns_and_strict_fails(tmp_path: Path) -> None:
    """A policy whose condition is constant false and a template without links are warnings
    with file:line: exit 0, or 1 with --strict."""
    stores = copy_lending(tmp_path)
    (stores / "lending" / "links.json").write_text("[]\n")
    (stores / "lending" / "never.cedar").write_text(
        '@id("never")\npermit (principal, action, resource)\nwhen { false };\n'
    )
    relaxed = verdict("validate", "--stores", str(stores))
    assert relaxed.returncode == 0, relaxed.stderr
    assert "lending/never.cedar:1: warning: policy 'never' can never apply" in relaxed.stderr
    assert "lending/escalations.cedar:2: warning: template 'escalated-loan-view' has no links" in (
        relaxed.stderr
    )
    strict = verdict("validate", "--strict", "--stores", str(stores))
    assert strict.returncode == 1
    clean = verdict("validate", "--strict", "--stores", str(POLICIES))
    assert clean.returncode == 0, clean.stderr
