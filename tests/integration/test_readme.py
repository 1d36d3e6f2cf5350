"""The README's examples run as shown: its Python snippets against a live server (the printed
line is the one the README promises), its offline commands, and the TLS walk-through."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.processes import free_port, verdict_server
from tests.workers_support import wait_until
from verdict.client import VerdictClient

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def blocks(language: str) -> list[str]:
    """Every fenced block of ``language`` in the README, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.M | re.S)


def block_with(language: str, needle: str) -> str:
    found = [b for b in blocks(language) if needle in b]
    assert len(found) == 1, f"one {language} block with {needle!r} expected"
    return found[0]


def promised(snippet: str) -> str:
    """The output a snippet's comment promises: after the last ``# `` of its print line."""
    comments = [line.split("# ", 1)[1] for line in snippet.splitlines() if "# " in line]
    return comments[-1].strip()


def run_python(snippet: str, target: str, cwd: Path = ROOT) -> str:
    code = snippet.replace("127.0.0.1:50051", target)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def shell_lines(block: str) -> list[str]:
    """The commands of a sh block: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    commands = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [command for command in commands if command and not command.startswith("#")]


def run_shell(command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def test_the_python_snippets_print_what_the_readme_says() -> None:
    """The sync snippet prints ``True ['disburse-partner-loans'] sha256:...``; the async one
    writes uma as suspended and reads its own write: ``2 ['forbid-suspended-principal']``."""
    sync = block_with("python", 'VerdictClient("127.0.0.1:50051")')
    asynchronous = block_with("python", "AsyncVerdictClient")
    with verdict_server() as server:
        target = f"127.0.0.1:{server.port}"
        printed = run_python(sync, target)
        expected = promised(sync)
        assert printed.startswith(expected.removesuffix("..."))
        assert run_python(asynchronous, target) == promised(asynchronous)
        # ...and lifts the suspension again: the README's `verdict test --server` still passes.
        with VerdictClient(target) as client:
            (uma,) = client.get_entities(['Employee::"uma"']).entities
        assert uma["attrs"]["suspended"] is False


def test_the_offline_commands_answer_as_documented(tmp_path: Path) -> None:
    """`verdict check` denies uma with the cross-partner forbid (exit 1); validate, fmt --check
    and test of the README's policy workflow pass on a copy of policies/."""
    check, validate = shell_lines(block_with("sh", "verdict check --stores"))
    denied = run_shell(check)
    assert denied.returncode == 1, denied.stderr
    assert "decision: DENY" in denied.stdout
    assert "forbid-cross-partner-loan-access" in denied.stdout
    assert run_shell(validate).returncode == 0
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    workflow = shell_lines(block_with("sh", "verdict fmt"))
    for command in workflow:
        if command.startswith(".venv/bin/verdict") and " diff " not in command:
            command = command.replace(".venv/bin/", "")
            if " fmt " in command:
                command = command.replace(" fmt ", " fmt --check ")  # the copy stays as is
            done = run_shell(command, cwd=tmp_path)
            assert done.returncode == 0, (command, done.stdout, done.stderr)


def test_the_tls_walk_through_serves_and_answers(tmp_path: Path) -> None:
    """The README's openssl steps, callers file and TLS server, then its TLS client snippet:
    the loan API's certificate gets ALLOW (``True``)."""
    setup = block_with("sh", "openssl req -x509")
    port, health = free_port(), free_port()
    script = setup.replace("/tmp/verdict-tls", str(tmp_path / "tls"))
    script = script.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    script = script.replace("127.0.0.1:50052", f"127.0.0.1:{health}")
    before_serve, serve = script.split(".venv/bin/verdict serve", 1)
    assert run_shell(before_serve).returncode == 0
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    command = "exec verdict serve" + serve.replace("\\\n", " ").split("  #")[0] + " --workers 1"
    server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env)
    try:
        assert wait_until(lambda: _answers(tmp_path, port), within=30)
        snippet = block_with("python", "tls_credentials")
        snippet = snippet.replace("/tmp/verdict-tls", str(tmp_path / "tls"))
        printed = run_python(snippet.replace("localhost:50051", f"localhost:{port}"), "")
        assert printed == "True"
    finally:
        server.terminate()
        server.wait(30)


def _answers(tmp_path: Path, port: int) -> bool:
    """Whether the TLS server answers a health check over mutual TLS yet."""
    tls = tmp_path / "tls"
    done = subprocess.run(
        [
            str(BIN / "verdict"),
            "healthcheck",
            "--server",
            f"localhost:{port}",
            "--tls-ca",
            str(tls / "ca.crt"),
            "--tls-cert",
            str(tls / "client.crt"),
            "--tls-key",
            str(tls / "client.key"),
        ],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def test_the_commands_through_a_running_server_answer_as_documented() -> None:
    """`check --server` and `test --server` against a live server; then the entities block:
    put a role from stdin (a version printed), get it back, delete it (the ``...`` line is a
    pattern, not a command)."""
    remote = shell_lines(block_with("sh", "verdict check --server 127.0.0.1:50051 --store"))
    entities = shell_lines(block_with("sh", "verdict entities put"))
    with verdict_server() as server:
        target = f"127.0.0.1:{server.port}"
        for command in remote:
            done = run_shell(command.replace("127.0.0.1:50051", target))
            if " check " in command:
                assert done.returncode == 1, done.stderr  # uma may not view loan-2001
                assert "forbid-cross-partner-loan-access" in done.stdout
            else:
                assert done.returncode == 0, done.stdout + done.stderr
        outputs = []
        for command in entities:
            if "..." in command:
                continue
            done = run_shell(command.replace("127.0.0.1:50051", target))
            assert done.returncode == 0, (command, done.stderr)
            outputs.append(done.stdout)
    put, got, _deleted = outputs
    assert "entity version" in put
    assert '"auditor"' in got


def test_the_sample_case_count_the_docs_give_is_the_real_one() -> None:
    """README and docs/policy-tests.md quote how many sample cases `verdict test` runs."""
    done = run_shell("verdict test --stores policies")
    assert done.returncode == 0, done.stderr
    real = re.search(r"\((\d+) cases from", done.stdout)
    assert real is not None, done.stdout
    assert f"({real[1]} cases, every lending policy exercised)" in README
    guide = (ROOT / "docs" / "policy-tests.md").read_text()
    assert f"{real[1]} passed, 0 failed ({real[1]} cases from" in guide
