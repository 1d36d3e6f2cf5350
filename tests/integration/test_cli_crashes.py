"""Flags and outputs a new user got wrong end in one `error:` line and exit 2, never a crash."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from benchmarks.bench_entities_load import write_store
from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import no_traceback, verdict

SHARED_REDIS = "redis://127.0.0.1:6379/15"
LOAD = ("entities", "load", "--stores", str(POLICIES), "--redis-url", SHARED_REDIS)
EXPORT = ("entities", "export", "--store", "lending", "--redis-url", SHARED_REDIS)
CHECK = (
    "check",
    "--stores",
    str(POLICIES),
    "--principal",
    "Employee::olivia",
    "--action",
    "Action::view",
    "--resource",
    "Loan::x",
    "--context",
    '{"mfa": true, "now": "2025-03-04T10:00:00Z"}',
)


def refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit 2, ``line`` last on stderr, no traceback."""
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].endswith(line), result.stderr


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (("--chunk", "0"), "error: --chunk=0: must be at least 1"),
        (("--chunk", "-3"), "error: --chunk=-3: must be at least 1"),
        (("--chunk", "1000001"), "error: --chunk=1000001: must be at most 100000"),
        (("--chunk", "ten"), "error: --chunk=ten: must be an integer"),
        (("--progress-seconds", "0"), "error: --progress-seconds=0: must be at least 0.001"),
        (("--progress-seconds", "nan"), "error: --progress-seconds=nan: must be a number"),
        (("--progress-seconds", "1e9"), "error: --progress-seconds=1e9: must be at most 86400"),
        (("--timeout", "-1"), "error: --timeout=-1: must be at least 0.001"),
        (("--timeout", "inf"), "error: --timeout=inf: must be a number"),
    ],
)
def test_a_numeric_flag_out_of_range_is_refused_naming_it(
    flags: tuple[str, ...], line: str
) -> None:
    """`entities load --chunk 0` was `range() arg 3 must not be zero`, a traceback."""
    refused(verdict(*LOAD, *flags), line)


def test_export_timeout_is_bounded_too() -> None:
    refused(verdict(*EXPORT, "--timeout", "0"), "error: --timeout=0: must be at least 0.001")


@pytest.mark.parametrize(
    "argv",
    [
        ("healthcheck",),
        (
            "check",
            "--server",
            "127.0.0.1:1",
            "--principal",
            "a::b",
            "--action",
            "a::c",
            "--resource",
            "a::d",
        ),
        ("test", "--stores", str(POLICIES), "--server", "127.0.0.1:1"),
    ],
    ids=["healthcheck", "check", "test"],
)
@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("0", "must be at least 0.001"),
        ("-1", "must be at least 0.001"),
        ("nan", "must be a number"),
        ("1e308", "must be at most 86400"),  # gRPC's deadline overflowed: "no answer" at once
    ],
)
def test_a_server_timeout_out_of_range_is_refused_naming_it(
    argv: tuple[str, ...], given: str, problem: str
) -> None:
    refused(verdict(*argv, "--timeout", given), f"error: --timeout={given}: {problem}")


@pytest.mark.parametrize(
    ("given", "line"),
    [
        ("build/", "error: --junit=build/: is a folder; give a file path such as build/report.xml"),
        ("tests", "error: --junit=tests: is a folder; give a file path such as tests/report.xml"),
        ("README.md/r.xml", "error: --junit=README.md/r.xml: cannot write (Not a directory)"),
        (
            "/proc/nope/r.xml",
            "error: --junit=/proc/nope/r.xml: cannot write (No such file or directory)",
        ),
    ],
)
def test_junit_that_cannot_be_a_file_is_refused(tmp_path: Path, given: str, line: str) -> None:
    """`--junit build/` wrote a file named build; a folder or a file as parent crashed."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "README.md").write_text("# readme\n")
    result = _in(tmp_path, "test", "--stores", str(POLICIES), "--junit", given)
    refused(result, line)
    assert not (tmp_path / "build").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "tests"]


def test_junit_makes_its_folders_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    result = _in(tmp_path, "test", "--stores", str(POLICIES), "--junit", "build/report.xml")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "build") == ["report.xml"]
    assert (tmp_path / "build" / "report.xml").read_text().startswith("<?xml version='1.0'")


@pytest.fixture(scope="module")
def loaded() -> None:
    """The example stores' entities in the shared Redis database 15."""
    result = verdict(*LOAD)
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize(
    ("given", "line"),
    [
        ("out/", "error: --out=out/: is a folder; give a file path such as out/entities.json"),
        ("tests", "error: --out=tests: is a folder; give a file path such as tests/entities.json"),
        ("README.md/x.json", "error: --out=README.md/x.json: cannot write (Not a directory)"),
        (
            "/proc/nope/x.json",
            "error: --out=/proc/nope/x.json: cannot write (No such file or directory)",
        ),
    ],
)
def test_export_out_that_cannot_be_a_file_is_refused(tmp_path: Path, given: str, line: str) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "README.md").write_text("# readme\n")
    refused(_in(tmp_path, *EXPORT, "--out", given), line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "tests"]


@pytest.mark.usefixtures("loaded")
def test_export_out_is_written_whole(tmp_path: Path) -> None:
    result = _in(tmp_path, *EXPORT, "--out", "a/b.json")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "a") == ["b.json"]
    assert (tmp_path / "a" / "b.json").read_text().startswith("[")


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize(
    "argv", [EXPORT, ("test", "--stores", str(POLICIES)), CHECK], ids=["export", "test", "check"]
)
def test_a_full_disk_on_stdout_is_one_line_and_exit_two(argv: tuple[str, ...]) -> None:
    """`verdict ... > /dev/full`: ENOSPC was a traceback, then another at the last flush."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "verdict", *argv],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            env=base,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: cannot write the output: No space left on device\n"


def _in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``verdict ARGS`` run in ``folder`` (relative output paths land there)."""
    return verdict(*args, cwd=folder)


@pytest.fixture(scope="module")
def large_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stores whose lending entities.json (60,000 entities, ~16 MB) is loaded in two halves."""
    folder = tmp_path_factory.mktemp("large")
    write_store(folder, 60_000)
    return folder / "stores"


def lending_keys() -> dict[str, object]:
    """Every key of the lending store in the shared database, and its version."""
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        keys = sorted(str(key) for key in client.scan_iter(match="verdict:{lending}*"))
        return {"keys": keys, "version": client.get("verdict:{lending}:version")}
    finally:
        client.close()


@pytest.mark.parametrize(
    "after", [r"parse: [0-9]", "write: started"], ids=["while-parsing", "while-writing"]
)
def test_ctrl_c_during_a_large_load_is_interrupted_and_nothing_switched(
    large_store: Path, after: str
) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) during a load in halves:
    `interrupted`, exit 130, the phase it cut short said so; no traceback (the pipe read
    from the forked child once failed unretrieved); the store's keys and version as before.
    Three times: where the signal lands in the parent's and the child's work varies."""
    before = lending_keys()
    for _ in range(3):
        load = subprocess.Popen(
            [
                sys.executable, "-m", "verdict", "entities", "load", "--stores", str(large_store),
                "--redis-url", SHARED_REDIS, "--progress-seconds", "0.2", "--chunk", "200",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")},
        )  # fmt: skip
        assert load.stderr is not None
        seen = []
        for line in load.stderr:
            seen.append(line)
            if re.match(after, line):
                os.killpg(load.pid, signal.SIGINT)
                break
        out, rest = load.communicate(timeout=30)
        stderr = "".join(seen) + rest
        assert load.returncode == 130, stderr
        assert "Traceback" not in stderr, stderr
        assert "Task exception" not in stderr, stderr
        assert stderr.endswith("interrupted\n"), stderr
        phase = "parse" if after.startswith("parse") else "write"
        assert re.search(rf"^{phase}: interrupted at [0-9,]+", stderr, re.M), stderr
        assert f"{phase}: done" not in stderr, stderr
        assert out == ""
        assert lending_keys() == before


def test_a_closed_stdout_is_no_crash() -> None:
    """`verdict test ... >&-`: Python starts with sys.stdout None; run's last flush of it
    raised AttributeError."""
    result = subprocess.run(
        [sys.executable, "-m", "verdict", "test", "--stores", str(POLICIES)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
        env={k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")},
    )
    assert (result.returncode, result.stderr) == (0, "")
