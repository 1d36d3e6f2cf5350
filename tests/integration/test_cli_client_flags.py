"""Flags refused before any call: prefixes, typos, --server, TLS files, tokens, --min-version."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import CHECK, verdict
from tests.processes import free_port
from verdict.cli.common import run

ADDRESS = "must be HOST:PORT, e.g. 127.0.0.1:50051"
TOKEN = "must be printable ASCII without spaces or control characters"


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("serve", "--stores", str(POLICIES), "--store", "lending"),
            "verdict serve: error: unrecognized arguments: --store lending; did you mean --stores?",
        ),
        (
            ("check", "--stores", str(POLICIES), "--cont", "{}", *CHECK),
            "verdict check: error: unrecognized arguments: --cont {}; did you mean --context?",
        ),
    ],
)
def test_a_prefix_of_a_flag_is_refused_with_the_nearest_flag(
    args: tuple[str, ...], line: str
) -> None:
    """`--store` is not read as `--stores` (argparse's abbreviations): refused, exit 2."""
    result = verdict(*args, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: verdict {args[0]}")
    assert last_line(result) == line


def test_a_typo_is_reported_before_the_flags_it_left_missing() -> None:
    """`--principl X`: the typo and its nearest flag, not "--principal ... are required"."""
    result = verdict("check", "--principl", "Employee::uma")
    assert result.returncode == 2
    assert last_line(result) == (
        "verdict check: error: unrecognized arguments: --principl Employee::uma; "
        "did you mean --principal?"
    )


@pytest.mark.parametrize("address", ["localhost", "[::1]", "::1", ":50051", "host:http"])
@pytest.mark.parametrize(
    "command",
    [
        ("check", *CHECK),
        ("test", "--stores", str(POLICIES)),
        ("entities", "put", "{empty}"),
        ("entities", "get", "Employee::uma"),
        ("entities", "delete", "Employee::uma"),
        ("healthcheck",),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_server_address_without_a_port_is_refused(
    tmp_path: Path, command: tuple[str, ...], address: str
) -> None:
    """--server needs HOST:PORT (grpc would try port 443): one line naming it, exit 2."""
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    argv = [part.format(empty=empty) for part in command]
    result = verdict(*argv, "--server", address)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: --server={address}: {ADDRESS}\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_a_server_address_with_a_port_is_asked(host: str) -> None:
    """HOST:PORT and [v6]:PORT are accepted: the call is made (nobody listens: unreachable)."""
    server = f"{host}:{free_port()}"
    probe = verdict("healthcheck", "--server", server, "--timeout", "2")
    assert (probe.returncode, probe.stderr) == (
        1,
        f"verdict healthcheck: {server}: unreachable (UNAVAILABLE)\n",
    )
    asked = verdict("check", "--server", server, *CHECK, "--timeout", "2")
    assert (asked.returncode, asked.stderr) == (
        2,
        f"error: cannot reach the server at {server} (UNAVAILABLE)\n",
    )


def test_tls_files_are_named_by_their_flags(tmp_path: Path) -> None:
    """A TLS file that is missing or not PEM: its flag and path, no grpc log lines, exit 2."""
    server = ("--server", f"127.0.0.1:{free_port()}", *CHECK)
    missing = verdict("check", *server, "--tls-ca", "/nonexistent")
    assert (missing.returncode, missing.stderr) == (
        2,
        "error: --tls-ca=/nonexistent: cannot read (No such file or directory)\n",
    )
    text = tmp_path / "hostname"
    text.write_text("build-host\n")
    not_pem = verdict("check", *server, "--tls-ca", str(text))
    assert (not_pem.returncode, not_pem.stderr) == (
        2,
        f"error: --tls-ca={text}: is not a PEM certificate\n",
    )
    pair = verdict("check", *server, "--tls-cert", str(text), "--tls-key", str(text))
    assert (pair.returncode, pair.stderr) == (
        2,
        f"error: --tls-cert={text}: is not a PEM certificate\n"
        f"error: --tls-key={text}: is not a PEM private key\n",
    )
    probe = verdict("healthcheck", "--server", server[1], "--tls-ca", str(text))
    assert (probe.returncode, probe.stderr) == (
        1,
        f"verdict healthcheck: --tls-ca={text}: is not a PEM certificate\n",
    )


@pytest.mark.parametrize("command", [("check", *CHECK), ("healthcheck",)], ids=lambda c: c[0])
def test_a_token_with_control_characters_is_refused_unshown(command: tuple[str, ...]) -> None:
    """grpc refuses such metadata only in the call (C-core lines, INTERNAL): refused first,
    naming --token or VERDICT_TOKEN as given, and never printing the token."""
    server = ("--server", f"127.0.0.1:{free_port()}")
    flag = verdict(*command, *server, "--token", "sec\nret")
    assert (flag.returncode, flag.stderr) == (2, f"error: --token: {TOKEN}\n")
    variable = verdict(*command, *server, env={"VERDICT_TOKEN": "sec\r"})
    assert (variable.returncode, variable.stderr) == (2, f"error: VERDICT_TOKEN: {TOKEN}\n")
    spaced = verdict(*command, *server, "--token", "sec ret")
    assert (spaced.returncode, spaced.stderr) == (2, f"error: --token: {TOKEN}\n")


@pytest.mark.parametrize("version", ["-1", "99999999999999999999999", "18446744073709551616"])
def test_min_version_out_of_the_wire_range_is_refused(version: str) -> None:
    """min_entity_version is a uint64: outside it, one line and exit 2 (was a ValueError
    traceback from protobuf)."""
    server = ("--server", f"127.0.0.1:{free_port()}")
    result = verdict("check", *server, *CHECK, "--min-version", version)
    assert (result.returncode, result.stderr) == (
        2,
        "error: --min-version: must be between 0 and 18446744073709551615\n",
    )


def test_test_help_shows_stores_required_as_it_is() -> None:
    """`verdict test` needs --stores: its usage says so, and the refusal is argparse's."""
    usage = " ".join(verdict("test", "--help").stdout.split())
    assert usage.startswith("usage: verdict test [-h] --stores DIR [--store STORE]")
    result = verdict("test")
    assert result.returncode == 2
    assert (
        last_line(result) == "verdict test: error: the following arguments are required: --stores"
    )
    schema = verdict("test", "--print-schema")  # needs no --stores
    assert schema.returncode == 0, schema.stderr
    assert '"$schema"' in schema.stdout


def test_an_unexpected_exception_is_exit_two_with_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bug in a command exits 2 (1 reads as DENY or a failed case in CI), says it is one, and
    keeps the traceback to report."""

    def broken(args: argparse.Namespace) -> int:
        raise LookupError("no such thing")

    assert run(argparse.Namespace(func=broken)) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0] == "error: internal error (LookupError); this is a bug in verdict, please report it"
    )
    assert err[1] == "Traceback (most recent call last):"
    assert err[-1] == "LookupError: no such thing"
