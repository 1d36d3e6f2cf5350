"""`verdict healthcheck` against real servers: SERVING, NOT_SERVING, unknown names, no server,
and TLS with and without a client certificate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port
from tests.security.authn_support import Pki, verdict_app, write_callers
from verdict.cli import main
from verdict.transport.server import VerdictServer

CALLERS = """
[[callers]]
id = "prober"
methods = ["decisions"]
stores = ["lending"]
"""


async def healthcheck(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `verdict healthcheck ARGV` off the event loop (the server answers on it): its exit
    code and what it wrote to stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["healthcheck", *argv])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


async def test_serving_server_exits_zero_silently(
    lending_server: VerdictServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that reports SERVING: exit 0, nothing printed; per-store names work too."""
    server = f"127.0.0.1:{lending_server.port}"
    assert await healthcheck(capsys, "--server", server) == (0, "")
    assert await healthcheck(capsys, "--server", server, "--service", "store/lending") == (0, "")


async def test_not_serving_server_exits_one(
    lending_server: VerdictServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the server reports NOT_SERVING (as when it drains), exit 1 with one line."""
    await lending_server.set_health(False, {"lending": False})
    code, err = await healthcheck(capsys, "--server", f"127.0.0.1:{lending_server.port}")
    assert code == 1
    assert err == f"verdict healthcheck: 127.0.0.1:{lending_server.port}: NOT_SERVING\n"
    code, err = await healthcheck(
        capsys, "--server", f"127.0.0.1:{lending_server.port}", "--service", "store/lending"
    )
    assert code == 1
    assert err.endswith("service 'store/lending': NOT_SERVING\n")


async def test_unknown_service_name_exits_one(
    lending_server: VerdictServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A health name the server does not know is a failure, not a pass."""
    code, err = await healthcheck(
        capsys, "--server", f"127.0.0.1:{lending_server.port}", "--service", "store/nope"
    )
    assert code == 1
    assert err.count("\n") == 1
    assert "NOT_FOUND" in err


async def test_nobody_listening_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    """A port nobody listens on: exit 1 at once with one short line."""
    server = f"127.0.0.1:{free_port()}"
    code, err = await healthcheck(capsys, "--server", server, "--timeout", "5")
    assert code == 1
    assert err == f"verdict healthcheck: {server}: unreachable (UNAVAILABLE)\n"


async def test_mutual_tls_main_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Over the TLS main port (mutual TLS): the CA and a client certificate give exit 0, under
    an overridden server name too; without the client certificate, or with plaintext, exit 1.
    The plaintext health port answers without any TLS flags."""
    pki = Pki.create(tmp_path)
    client_cert, client_key = pki.client("prober").write(tmp_path, "prober")
    async with verdict_app(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca_file,
        callers_file=write_callers(tmp_path, CALLERS),
        health_listen="127.0.0.1:0",
    ) as app:
        assert app.server is not None
        port = app.server.port
        tls = ["--tls-ca", str(pki.ca_file)]
        client = ["--tls-cert", str(client_cert), "--tls-key", str(client_key)]
        assert await healthcheck(capsys, "--server", f"localhost:{port}", *tls, *client) == (0, "")
        by_ip = ["--server", f"127.0.0.1:{port}", "--tls-server-name", "localhost"]
        assert await healthcheck(capsys, *by_ip, *tls, *client) == (0, "")
        code, err = await healthcheck(capsys, "--server", f"localhost:{port}", *tls)
        assert code == 1
        assert err.endswith("unreachable (UNAVAILABLE)\n")
        code, _ = await healthcheck(capsys, "--server", f"localhost:{port}")
        assert code == 1
        health = f"127.0.0.1:{app.server.health_port}"
        assert await healthcheck(capsys, "--server", health) == (0, "")


async def test_unreadable_tls_files_exit_one(capsys: pytest.CaptureFixture[str]) -> None:
    """A CA file that is not there (the flag named), or a certificate without its key: exit 1,
    one line."""
    missing = "/nonexistent/ca.pem"
    code, err = await healthcheck(capsys, "--tls-ca", missing)
    assert (code, err) == (
        1,
        f"verdict healthcheck: --tls-ca={missing}: cannot read (No such file or directory)\n",
    )
    code, err = await healthcheck(capsys, "--tls-cert", missing)
    assert (code, err) == (1, "verdict healthcheck: --tls-cert and --tls-key go together\n")


def test_healthcheck_imports_nothing_of_the_server(tmp_path: Path) -> None:
    """A container runs `verdict healthcheck` every few seconds: in a fresh interpreter it loads
    grpc and the client, never pydantic, Cedar, Redis or the server (~0.8 s of CPU each time),
    while `verdict --help` still lists it and the full parser still knows it."""
    probe = (
        "import sys\n"
        "from verdict.cli import main\n"
        "code = main(['healthcheck', '--server', '127.0.0.1:1', '--timeout', '0.5'])\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = roots & {'pydantic', 'pydantic_settings', 'cedarpy', 'redis', 'structlog'}\n"
        "server = [m for m in sys.modules if m.startswith(('verdict.app', 'verdict.config',"
        " 'verdict.engine', 'verdict.transport', 'verdict.store'))]\n"
        "print(code, sorted(heavy), server)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.stdout.strip() == "1 [] []", done.stdout + done.stderr
    assert "unreachable (UNAVAILABLE)" in done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "verdict", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "healthcheck" in listed.stdout
