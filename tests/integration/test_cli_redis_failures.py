"""A Redis the CLI cannot use is named with the true reason, never as one that did not answer."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import verdict
from tests.processes import verdict_server
from tests.redis_support import RedisProcess, free_port

PASSWORD = "s3cret-pw"
# What each command needs besides its --redis-url.
COMMANDS = {
    "load": ("entities", "load", "--stores", str(POLICIES)),
    "export": ("entities", "export", "--store", "lending"),
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server that wants the password PASSWORD."""
    server = RedisProcess(
        free_port(),
        tmp_path_factory.mktemp("redis-pw"),
        extra=["--requirepass", PASSWORD],
        cli_options=["-a", PASSWORD, "--no-auth-warning"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def refused_cleanly(result: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit 2, stderr exactly ``line``, nothing on stdout, no traceback, no password."""
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr
    assert "wrong-pw" not in result.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("credentials", [":wrong-pw@", "", "loader:wrong-pw@"])
def test_a_refused_password_says_authentication_failed(
    guarded: RedisProcess, command: str, credentials: str
) -> None:
    """A wrong password, or none, is `authentication failed` (not a Redis that is slow), at
    once, the URL shown without the password."""
    url = f"redis://{credentials}127.0.0.1:{guarded.port}/0"
    started = time.monotonic()
    result = verdict(*COMMANDS[command], "--redis-url", url)
    refused_cleanly(
        result,
        f"error: cannot connect to Redis at redis://127.0.0.1:{guarded.port}/0: "
        "authentication failed",
    )
    assert time.monotonic() - started < 30  # not the retries of a timeout


def test_a_database_out_of_range_is_named(guarded: RedisProcess) -> None:
    """`/99` on a Redis of 16 databases: the database is named, exit 2, no ResponseError."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/99"
    result = verdict(*COMMANDS["load"], "--redis-url", url)
    refused_cleanly(
        result,
        f"error: cannot connect to Redis at redis://127.0.0.1:{guarded.port}/99: "
        "database 99 does not exist on this server",
    )


def test_the_right_password_still_loads(guarded: RedisProcess) -> None:
    """The classification changes no working load (and SELECT of a real database works)."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/3"
    result = verdict(*COMMANDS["load"], "--redis-url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lending: 42 entities in ")
    assert guarded.cli("-n", "3", "DBSIZE").strip() != "0"


def test_a_host_name_that_does_not_resolve_is_named() -> None:
    """DNS failure: `host name not found`."""
    url = f"redis://loader:{PASSWORD}@nonexistent.invalid:6379/0"
    result = verdict(*COMMANDS["load"], "--redis-url", url)
    refused_cleanly(
        result,
        "error: cannot connect to Redis at redis://nonexistent.invalid:6379/0: host name not found",
    )


def test_a_missing_unix_socket_is_named_as_given(tmp_path: Path) -> None:
    """unix:///path that does not exist: `no such socket`, the URL in the user's form (three
    slashes), its password (a query parameter) left out."""
    sock = tmp_path / "absent.sock"
    result = verdict(*COMMANDS["load"], "--redis-url", f"unix://{sock}?password={PASSWORD}")
    refused_cleanly(result, f"error: cannot connect to Redis at unix://{sock}: no such socket")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_url_of_another_scheme_names_the_flag(command: str) -> None:
    """`--redis-url http://x`: the flag and the schemes it takes, not redis-py's ValueError."""
    result = verdict(*COMMANDS[command], "--redis-url", "http://x")
    refused_cleanly(
        result, "error: --redis-url=http://x: must be a redis://, rediss:// or unix:// URL"
    )


def test_serve_names_a_redis_url_of_another_scheme() -> None:
    """`serve --redis-url http://x` stops before starting, with the same line."""
    result = verdict(
        "serve", "--stores", str(POLICIES), "--workers", "1", "--redis-url", "http://x"
    )
    refused_cleanly(
        result, "error: --redis-url=http://x: must be a redis://, rediss:// or unix:// URL"
    )


def test_a_refused_connection_is_still_named() -> None:
    """Nothing listening: still `connection refused`."""
    port = free_port()
    result = verdict(*COMMANDS["load"], "--redis-url", f"redis://127.0.0.1:{port}/0")
    refused_cleanly(
        result, f"error: cannot connect to Redis at redis://127.0.0.1:{port}/0: connection refused"
    )


def test_a_redis_that_never_answers_still_timed_out() -> None:
    """A socket that takes connections (the kernel's backlog) but never replies: that is the
    one failure that says it did not answer in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        result = verdict(*COMMANDS["load"], "--redis-url", url, "--timeout", "0.2")
    refused_cleanly(
        result, f"error: Redis at redis://127.0.0.1:{port}/0: redis did not answer in time"
    )


def test_audit_verify_names_a_refused_password(guarded: RedisProcess) -> None:
    """`audit verify --redis-url` with a wrong password: the same reason, exit 2."""
    url = f"redis://:wrong-pw@127.0.0.1:{guarded.port}/0"
    result = verdict("audit", "verify", "--redis-url", url)
    refused_cleanly(
        result,
        f"error: cannot connect to Redis at redis://127.0.0.1:{guarded.port}/0: "
        "authentication failed",
    )


def test_audit_verify_shows_the_stream_without_the_password(guarded: RedisProcess) -> None:
    """The stream's name in verify's report is the URL without its password."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/0"
    result = verdict("audit", "verify", "--redis-url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"redis://127.0.0.1:{guarded.port}/0 verdict:audit: 0 records, intact\n"


def test_serve_starts_and_logs_why_redis_cannot_be_used(guarded: RedisProcess) -> None:
    """`serve` with a wrong password still serves (decisions fail closed), and its start-up
    warning says why, without the password."""
    url = f"redis://:wrong-pw@127.0.0.1:{guarded.port}/0"
    with verdict_server("--redis-url", url, "--log-format", "json") as server:
        pass
    warnings = [
        json.loads(line)
        for line in server.stderr.splitlines()
        if '"entity_store_unavailable_at_start"' in line
    ]
    assert [w["reason"] for w in warnings] == ["authentication failed"]
    assert "wrong-pw" not in server.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_cluster_variable_is_read_and_a_single_node_is_named(
    guarded: RedisProcess, command: str
) -> None:
    """VERDICT_REDIS_CLUSTER is read as serve reads it (it was overridden by the flag's
    default), and a node that is no cluster node is said to be one, not a traceback."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/0"
    result = verdict(*COMMANDS[command], "--redis-url", url, env={"VERDICT_REDIS_CLUSTER": "true"})
    refused_cleanly(
        result,
        f"error: cannot connect to Redis at redis://127.0.0.1:{guarded.port}/0: "
        "no node answered as a Redis Cluster node",
    )
