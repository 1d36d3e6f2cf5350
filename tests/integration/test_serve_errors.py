"""`verdict serve` that cannot start says why in one `error:` line each and exits 2."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import CHECK, verdict
from tests.processes import free_port, verdict_server
from tests.workers_support import verdict_workers


def serve(*args: str, env: dict[str, str] | None = None, workers: str = "1") -> list[str]:
    """The stderr lines of `verdict serve` on the sample stores, which must exit 2 with no
    traceback."""
    result = verdict("serve", "--stores", str(POLICIES), "--workers", workers, *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ((), {"VERDICT_LOG_LEVEL": "loud"}, "VERDICT_LOG_LEVEL=loud"),
        ((), {"VERDICT_LOG_LEVEL": "critical"}, "VERDICT_LOG_LEVEL=critical"),
        (("--log-level", "foo"), {}, "--log-level=foo"),
        (("--log-level=FOO",), {}, "--log-level=FOO"),
    ],
)
def test_an_unknown_log_level_is_named(
    args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    """An unknown level was a KeyError traceback (exit 1); the levels Verdict logs at are
    named."""
    assert serve(*args, env=env) == [f"error: {line}: must be one of debug, info, warning, error"]


def test_a_log_level_in_capitals_is_accepted() -> None:
    """Levels are read in any case, as before: WARNING serves (and stops at the missing stores
    here, after the settings)."""
    result = verdict(
        "serve", "--stores", "/nonexistent", "--workers", "1", env={"VERDICT_LOG_LEVEL": "WARNING"}
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: /nonexistent:0: policy stores folder not found"
    )


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("VERDICT_REDIS_URL", "http://x", "http://x"),
        ("VERDICT_REDIS_URL", "http://u:secret@x", "http://x"),
        ("VERDICT_REDIS_URL", "u:secret@x:6379", "***@x:6379"),
        ("VERDICT_AUDIT_REDIS_URL", "http://:secret@x/0?password=secret", "http://x/0"),
        ("--redis-url", "localhost:6379", "localhost:6379"),
    ],
)
def test_a_redis_url_of_another_scheme_is_named_without_its_password(
    name: str, value: str, shown: str
) -> None:
    """A Redis URL that is not redis://, rediss:// or unix:// was a ValueError traceback at the
    first connection (exit 1); now one line, the URL shown without credentials."""
    args = (name, value) if name.startswith("--") else ()
    env = {} if args else {name: value}
    lines = serve(*args, env=env)
    assert lines == [f"error: {name}={shown}: must be a redis://, rediss:// or unix:// URL"]
    assert "secret" not in "\n".join(lines)


def test_a_redis_url_with_a_bad_port_is_named_without_its_password() -> None:
    """A port that is not a number was the same traceback, later."""
    lines = serve(env={"VERDICT_REDIS_URL": "redis://:secret@x:abc"})
    assert lines == ["error: VERDICT_REDIS_URL=redis://x:abc: must have a port from 0 to 65535"]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("192.0.2.1", "address not available on this host"),  # TEST-NET-1: no host has it
        ("256.1.1.1", "not a valid address"),
        ("nonexistent.invalid", "host name not found"),  # .invalid never resolves (RFC 6761)
    ],
)
def test_an_address_this_host_cannot_listen_on_is_one_line(
    host: str, problem: str, workers: str
) -> None:
    """grpc said only `RuntimeError: Failed to bind to address` (a traceback, exit 1), from
    the process or from worker 0 under the supervisor."""
    listen = f"{host}:{free_port()}"
    assert serve("--listen", listen, workers=workers) == [
        f"error: cannot listen on {listen}: {problem}"
    ]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("flag", "env"),
    [
        ("--metrics-listen", False),
        ("--health-listen", False),
        ("VERDICT_METRICS_LISTEN", True),
    ],
)
def test_a_metrics_or_health_address_says_which_it_is(flag: str, env: bool, workers: str) -> None:
    """--metrics-listen on an address not on this host said `cannot serve: [Errno 99] Cannot
    assign requested address`, naming neither the address nor the flag."""
    listen = f"192.0.2.1:{free_port()}"
    args = ("--listen", "127.0.0.1:0", *(() if env else (flag, listen)))
    lines = serve(*args, env={flag: listen} if env else None, workers=workers)
    assert lines == [
        f"error: cannot listen on {listen} ({flag}): address not available on this host"
    ]


def test_workers_that_cannot_load_the_stores_say_what_one_process_says() -> None:
    """Under the supervisor, worker 0's `cannot load policy stores:` lines came without
    `error:`, between JSON log lines and an `entity_writes_refused` warning; now the output is
    that of --workers 1, line for line."""
    outputs = []
    for workers in ("1", "2"):
        result = verdict(
            "serve", "--stores", "/nonexistent", "--listen", "127.0.0.1:0", "--workers", workers
        )
        assert result.returncode == 2, result.stderr
        outputs.append(result.stderr)
    assert outputs[0] == outputs[1]
    assert outputs[1].splitlines() == [
        "error: cannot load policy stores:",
        "error: /nonexistent:0: policy stores folder not found",
    ]


def test_version_says_error_for_a_missing_stores_folder() -> None:
    """`verdict version` printed the diagnostic without the `error:` every other command
    prints."""
    result = verdict("version", "--stores", "/nonexistent")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: /nonexistent:0: policy stores folder not found"]


def test_each_workers_server_started_names_the_supervisors_metrics(tmp_path: Path) -> None:
    """Workers serve no /metrics of their own: their server_started said `"metrics": null`.
    Each now names the address the supervisor serves their summed metrics on, and says so."""
    with verdict_workers(tmp_path, workers=2) as supervised:
        started = supervised.wait_for("server_started", count=2)
        [supervisor] = supervised.wait_for("supervisor_started")
        address = f"127.0.0.1:{supervised.metrics_port}"
        assert supervisor["metrics"] == address
        assert sorted(e["worker"] for e in started) == [0, 1]
        for event in started:
            assert (event["metrics"], event["metrics_served_by"]) == (address, "supervisor")
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            assert b"verdict_workers_ready 2.0" in reply.read()


def test_one_process_says_it_serves_its_own_metrics() -> None:
    """--workers 1 serves /metrics itself, and its server_started says so."""
    with verdict_server("--metrics-listen", "127.0.0.1:0") as server:
        assert server.process.stderr is not None
        for _ in range(50):  # the server is up: its start events are already written
            line = server.process.stderr.readline()
            if '"server_started"' in line:
                break
        started = json.loads(line)
        assert started["metrics_served_by"] == "server"
        assert started["metrics"].startswith("127.0.0.1:")


ONE_STORE = "is one policy store, not a folder of stores"


@pytest.mark.parametrize(
    "command",
    [
        ("validate", "--stores", "{store}"),
        ("check", "--stores", "{store}", *CHECK),
        ("test", "--stores", "{store}"),
        ("fmt", "--check", "--stores", "{store}"),
        ("diff", "--stores", "{store}", "--against", "{stores}"),
        ("version", "--stores", "{store}"),
        ("seal", "--stores", "{store}"),
        ("audit", "replay", "{store}/none.jsonl", "--stores", "{store}"),
        ("entities", "load", "--stores", "{store}", "--redis-url", "redis://127.0.0.1:1"),
        ("serve", "--stores", "{store}", "--workers", "1"),
        ("serve", "--stores", "{store}", "--workers", "2"),
    ],
    ids=lambda c: " ".join(c[:2]) + (" --workers 2" if c[-1] == "2" else ""),
)
def test_a_store_given_as_the_folder_of_stores_is_named(command: tuple[str, ...]) -> None:
    """`validate --stores policies/lending` exited 0 with `loans` and `tests` for stores, and
    `check` said its store id named no store; every command taking --stores now says what
    was meant, exit 2."""
    store = str(POLICIES / "lending")
    result = verdict(*(part.format(store=store, stores=POLICIES) for part in command))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: --stores={store}: {ONE_STORE}; use --stores {POLICIES}"
    ]


def test_a_store_given_to_diff_against_is_named() -> None:
    """diff's --against is a folder of stores too."""
    store = POLICIES / "lending"
    result = verdict("diff", "--stores", str(POLICIES), "--against", str(store))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --against={store}: {ONE_STORE}; use --against {POLICIES}"
    ]


def test_a_schema_only_store_and_the_variable_are_named(tmp_path: Path) -> None:
    """A store that holds only a schema is a store too; VERDICT_STORES (serve) is named as
    the variable it is."""
    (tmp_path / "stores" / "only").mkdir(parents=True)
    (tmp_path / "stores" / "only" / "schema.cedarschema").write_text("entity User;\n")
    schema_only = verdict("validate", "--stores", str(tmp_path / "stores" / "only"))
    assert schema_only.stderr.splitlines() == [
        f"error: --stores={tmp_path}/stores/only: {ONE_STORE}; use --stores {tmp_path}/stores"
    ]
    result = verdict("serve", "--workers", "1", env={"VERDICT_STORES": str(POLICIES / "lending")})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: VERDICT_STORES={POLICIES}/lending: {ONE_STORE}; use VERDICT_STORES={POLICIES}"
    ]


def test_a_folder_of_stores_with_a_stray_file_still_loads(tmp_path: Path) -> None:
    """Only *.cedar files and a schema make a folder a store: a README or a kustomization
    beside the stores (as in policies/) leaves it a folder of stores."""
    stores = tmp_path / "stores"
    (stores / "s").mkdir(parents=True)
    (stores / "s" / "p.cedar").write_text("permit(principal, action, resource);\n")
    (stores / "README.md").write_text("stores\n")
    (stores / "entities.json").write_text("[]\n")
    result = verdict("validate", "--stores", str(stores))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("s: 1 policies")
