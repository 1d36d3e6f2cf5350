"""The command line behaves (issue 13): errors name what is wrong, in the subcommand's words."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.processes import free_port, verdict_server
from verdict.config import Settings

CHECK = ("--principal", "Employee::olivia", "--action", "Action::view", "--resource", "Loan::x")


def verdict(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m verdict ARGS` with VERDICT_* variables of this process left out (run in
    ``cwd``, where relative output paths land, if given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**base, **(env or {})},
        cwd=cwd,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "pydantic" not in result.stderr, result.stderr
    assert "http" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def taken() -> Iterator[str]:
    """A loopback address another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("flag", ["--listen", "--health-listen", "--metrics-listen"])
def test_a_port_in_use_is_one_line_and_exit_two(taken: str, flag: str, workers: str) -> None:
    """gRPC, health or metrics port taken: `cannot listen on ...: address already in use`, 2;
    the health and metrics addresses say which they are."""
    listen = () if flag == "--listen" else ("--listen", "127.0.0.1:0")
    result = verdict("serve", "--stores", str(POLICIES), "--workers", workers, *listen, flag, taken)
    assert result.returncode == 2
    named = "" if flag == "--listen" else f" ({flag})"
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on {taken}{named}: address already in use"
    ]
    no_traceback(result)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--listen", "localhost"), {}, "--listen=localhost"),
        ((), {"VERDICT_LISTEN": "localhost"}, "VERDICT_LISTEN=localhost"),
        (("--health-listen", "127.0.0.1"), {}, "--health-listen=127.0.0.1"),
        ((), {"VERDICT_METRICS_LISTEN": "[::1]"}, "VERDICT_METRICS_LISTEN=[::1]"),
    ],
)
def test_a_listen_address_without_port_is_refused(
    args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    """A listen address needs HOST:PORT (or :PORT); the flag or variable is named, exit 2."""
    result = verdict("serve", "--stores", str(POLICIES), "--workers", "1", *args, env=env)
    assert result.returncode == 2
    assert f"error: {named}: must be HOST:PORT or :PORT" in result.stderr
    no_traceback(result)


def test_port_only_listen_is_accepted() -> None:
    """`:PORT` is a valid listen address (every interface)."""
    assert Settings(listen=":50051").listen == ":50051"


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ((), {"VERDICT_MAX_BATCH_SIZE": "abc"}, "VERDICT_MAX_BATCH_SIZE=abc: must be an integer"),
        (("--max-batch-size", "0"), {}, "--max-batch-size=0: must be at least 1"),
        (
            (),
            {"VERDICT_LOG_FORMAT": "xml"},
            "VERDICT_LOG_FORMAT=xml: must be one of auto, json, console",
        ),
        (
            (),
            {"VERDICT_REDIS_TIMEOUT_SECONDS": "-1"},
            "VERDICT_REDIS_TIMEOUT_SECONDS=-1: must be more than 0",
        ),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_it(
    args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    """A bad VERDICT_* variable or flag: one line with its name, value and expected form."""
    result = verdict("serve", "--stores", str(POLICIES), "--workers", "1", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {line}"]


def test_a_bad_variable_stops_check_too() -> None:
    """`verdict check` reads the same settings: a bad variable is named, not dumped."""
    result = verdict("check", "--stores", str(POLICIES), *CHECK, env={"VERDICT_WORKERS": "x"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: VERDICT_WORKERS=x: must be an integer"


@pytest.mark.parametrize(
    ("args", "usage", "hint"),
    [
        (("serve", "--port", "50070"), "usage: verdict serve", "did you mean --listen?"),
        (("check", "--stors", "x", *CHECK), "usage: verdict check", "did you mean --stores?"),
        (
            ("entities", "load", "--stores", "p", "--redis-url", "redis://x", "--chunks", "9"),
            "usage: verdict entities load",
            "did you mean --chunk?",
        ),
        (("serv",), "usage: verdict [-h]", "did you mean 'serve'?"),
        (("entities", "lod"), "usage: verdict entities", "did you mean 'load'?"),
        (("serve", "--log-format", "jsn"), "usage: verdict serve", "did you mean 'json'?"),
    ],
)
def test_a_wrong_flag_gets_the_subcommands_usage_and_the_nearest_flag(
    args: tuple[str, ...], usage: str, hint: str
) -> None:
    """An unknown flag or name is reported by the (sub)command at fault, nearest name first."""
    result = verdict(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    assert hint in result.stderr


@pytest.mark.parametrize("command", ["check", "test"])
def test_an_unknown_store_blames_store_and_suggests_the_nearest(command: str) -> None:
    """`--store lendin`: the flag the user typed is blamed, and `lending` suggested."""
    extra = CHECK if command == "check" else ()
    result = verdict(command, "--stores", str(POLICIES), "--store", "lendin", *extra)
    assert result.returncode == 2
    assert "default store" not in result.stderr
    assert (
        "error: --store 'lendin' is not one of the policy stores ['lending']; "
        "did you mean 'lending'?"
    ) in result.stderr


def test_an_unknown_default_store_suggests_the_nearest() -> None:
    """`serve --default-store lendin` names the default store and suggests `lending`."""
    result = verdict(
        "serve", "--stores", str(POLICIES), "--workers", "1", "--default-store", "lendin"
    )
    assert result.returncode == 2
    assert "default store 'lendin' is not one of ['lending']; did you mean 'lending'?" in (
        result.stderr
    )


def test_entities_load_names_a_redis_that_refuses_connections() -> None:
    """Nothing listens at the URL: `cannot connect ... connection refused`, the URL shown
    without its credentials."""
    url = f"redis://loader:s3cret@127.0.0.1:{free_port()}/0"
    result = verdict("entities", "load", "--stores", str(POLICIES), "--redis-url", url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot connect to Redis at {url.replace('loader:s3cret@', '')}: connection refused"
    )
    assert "s3cret" not in result.stderr


def test_serve_help_shows_the_settings_defaults() -> None:
    """`serve --help` shows each flag's real default, taken from Settings."""
    result = verdict("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    fields = Settings.model_fields
    for flag, field in [
        ("--stores", "stores"),
        ("--listen", "listen"),
        ("--audit-mode", "audit_mode"),
    ]:
        default = fields[field].default
        assert re.search(
            rf"{flag} [^-]*?\(VERDICT_{field.upper()}; default: {re.escape(str(default))}\)", text
        ), flag  # fmt: skip
    assert "default: policies" in text
    assert "default: None" not in text


def test_check_help_shows_defaults_of_its_flags() -> None:
    """Flags with a default say it; flags without one say nothing invented."""
    text = " ".join(verdict("check", "--help").stdout.split())
    assert "deadline of each call (default: 10.0)" in text
    assert "default: None" not in text


def test_server_started_names_the_metrics_address_it_serves() -> None:
    """With metrics on, the server_started event says where /metrics is, and it answers there."""
    with verdict_server("--metrics-listen", "127.0.0.1:0") as server:
        assert server.process.stderr is not None
        started: dict[str, str] = {}
        for _ in range(50):  # the server is up: its start events are already written
            line = server.process.stderr.readline()
            if '"server_started"' in line:
                started = json.loads(line)
                break
        host, _, port = started["metrics"].rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        with urllib.request.urlopen(f"http://{started['metrics']}/metrics", timeout=10) as reply:
            assert b"verdict_" in reply.read()


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (("validate", "--stores", "{broken}"), 1),
        (("fmt", "--check", "--stores", "{broken}"), 2),
        (("diff", "--stores", "{broken}", "--against", str(POLICIES)), 2),
        (("test", "--stores", "{broken}"), 2),
        (("check", "--stores", "{broken}", *CHECK), 2),
        (("audit", "replay", "{broken}/none.jsonl", "--stores", "{broken}"), 2),
    ],
)
def test_every_command_reports_unusable_stores_the_same_way(
    tmp_path: object, command: tuple[str, ...], code: int
) -> None:
    """A store with a syntax error: every command that loads stores prints `error: FILE:LINE:
    ...` lines and a summary, all prefixed alike, no traceback, and exits as documented (validate
    1: the answer is "invalid"; the others 2: they could not do their work)."""
    broken = f"{tmp_path}/stores"
    os.makedirs(f"{broken}/s")
    with open(f"{broken}/s/p.cedar", "w") as policy:
        policy.write("permit(principal, action, resource")
    result = verdict(*(part.format(broken=broken) for part in command))
    no_traceback(result)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines
    assert all(line.startswith("error: ") for line in lines), lines
    assert any(re.match(r"error: .*p\.cedar:1: ", line) for line in lines), lines


HELP_PROBE = """
import contextlib, io, json, sys
from verdict.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
roots = {m.split('.')[0] for m in sys.modules}
heavy = roots & {'cedarpy', 'redis', 'grpc', 'structlog', 'pydantic'}
server = [m for m in sys.modules if m.startswith(('verdict.app', 'verdict.engine',
    'verdict.transport', 'verdict.store', 'verdict.policy'))]
print(json.dumps([code, 'usage:' in out.getvalue(), sorted(heavy), server]))
"""


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        ([], set()),
        (["check"], set()),
        (["validate"], set()),
        (["test"], set()),
        (["entities"], set()),
        (["entities", "load"], set()),
        (["entities", "put"], set()),
        (["fmt"], set()),
        (["diff"], set()),
        (["version"], set()),
        (["seal"], set()),
        (["audit", "replay"], set()),
        (["serve"], {"pydantic"}),  # its help shows Settings' defaults
        (["healthcheck"], {"grpc"}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_help_imports_no_engine_cedar_or_redis(argv: list[str], allowed: set[str]) -> None:
    """`verdict [COMMAND] --help` answers at once: it imports the command's module alone, and
    neither Cedar, Redis, grpc nor the engine (it took ~0.7 s with every command's stack)."""
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, usage, heavy, server = json.loads(done.stdout)
    assert (code, usage) == (0, True), done.stdout + done.stderr
    assert set(heavy) <= allowed, heavy
    assert server == [], server


def test_every_command_in_the_table_is_registered_as_listed() -> None:
    """The full parser (every module) and the command table agree: each row's module registers
    that command, with the table's summary as its help."""
    from verdict.cli import build_parser
    from verdict.cli.commands import COMMANDS

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help for a in commands._choices_actions}
    assert helps == {name: c.summary for name, c in COMMANDS.items()}
