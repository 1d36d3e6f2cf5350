"""Setting values the CLI once took for others: Redis databases, namespaces, whitespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POLICIES, ROOT
from tests.integration.test_cli_behaviour import verdict
from tests.integration.test_serve_errors import serve
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)

NOT_A_NUMBER = "the database must be a number (e.g. /0)"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/abc", "redis://127.0.0.1:6379/abc"),
        ("redis://127.0.0.1:6379/11x", "redis://127.0.0.1:6379/11x"),
        ("redis://:s3cret@127.0.0.1:6379/1/2", "redis://127.0.0.1:6379/1/2"),
        ("rediss://127.0.0.1:6379/0?db=one&password=s3cret", "rediss://127.0.0.1:6379/0"),
    ],
)
@pytest.mark.parametrize("source", ["--redis-url", "VERDICT_REDIS_URL", "VERDICT_AUDIT_REDIS_URL"])
def test_serve_refuses_a_redis_database_that_is_not_a_number(
    url: str, shown: str, source: str
) -> None:
    """redis-py read /abc and /11x as database 0 and /1/2 as 12: another database than
    meant, without a word; now one line naming the setting, the URL without its password."""
    args = (source, url) if source.startswith("--") else ()
    lines = serve(*args, env={} if args else {source: url})
    assert lines == [f"error: {source}={shown}: {NOT_A_NUMBER}"]
    assert "s3cret" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("command", "url", "line"),
    [
        (
            ("entities", "load", "--stores", str(POLICIES)),
            "redis://:s3cret@127.0.0.1:1/abc",
            f"--redis-url=redis://127.0.0.1:1/abc: {NOT_A_NUMBER}",
        ),
        (
            ("entities", "export", "--store", "lending"),
            "unix:///nonexistent/redis.sock?db=1a",
            "--redis-url=unix:///nonexistent/redis.sock: the database must be a number "
            "(e.g. ?db=0)",
        ),
        (
            ("audit", "verify"),
            "redis://127.0.0.1:1/1/2",
            f"--redis-url=redis://127.0.0.1:1/1/2: {NOT_A_NUMBER}",
        ),
    ],
)
def test_commands_with_redis_url_refuse_a_database_that_is_not_a_number(
    command: tuple[str, ...], url: str, line: str
) -> None:
    """The CLI's --redis-url check is Settings' check: the same refusal, before connecting."""
    result = verdict(*command, "--redis-url", url)
    assert (result.returncode, result.stderr, result.stdout) == (2, f"error: {line}\n", "")
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize("command", [("entities", "load", "--stores", "policies"), ("serve",)])
def test_a_redis_url_that_does_not_parse_is_one_line(command: tuple[str, ...]) -> None:
    """An unclosed IPv6 literal made urllib raise inside the check itself: an internal error
    (a traceback) for --redis-url. Refused as not a URL, flag and variable alike."""
    url = "redis://:s3cret@[::1"
    flagged = verdict(*command, "--redis-url", url, cwd=ROOT)
    assert (flagged.returncode, flagged.stderr) == (
        2,
        "error: --redis-url=<unparsable URL>: is not a valid URL\n",
    )
    if command == ("serve",):
        variable = verdict("serve", "--workers", "1", env={"VERDICT_REDIS_URL": url}, cwd=ROOT)
        assert (variable.returncode, variable.stderr) == (
            2,
            "error: VERDICT_REDIS_URL=<unparsable URL>: is not a valid URL\n",
        )


@pytest.mark.parametrize(
    ("flag", "prefix"), [((), "prod:"), (("--redis-namespace", "staging"), "staging:")]
)
def test_entities_load_and_export_read_the_namespace_variable(
    redis: RedisProcess, flag: tuple[str, ...], prefix: str
) -> None:
    """VERDICT_REDIS_NAMESPACE was ignored by `entities load`, which wrote under verdict:
    where a server given the variable never reads; the flag still overrides it."""
    env = {"VERDICT_REDIS_NAMESPACE": "prod"}
    stores = ("--stores", str(POLICIES), "--redis-url", redis.url)
    loaded = verdict("entities", "load", *stores, *flag, env=env)
    assert loaded.returncode == 0, loaded.stderr
    keys = redis.cli("--scan").split()
    assert keys
    assert [k for k in keys if not k.startswith(prefix)] == []
    exported = verdict(
        "entities", "export", "--store", "lending", "--redis-url", redis.url, *flag, env=env
    )
    assert exported.returncode == 0, exported.stderr
    written = json.loads((POLICIES / "lending" / "entities.json").read_text(encoding="utf-8"))
    assert len(json.loads(exported.stdout)) == len(written)


def test_serve_help_names_the_namespace_variable() -> None:
    """serve has no --redis-namespace flag: its help names the variable that sets it."""
    result = verdict("serve", "--help")
    assert result.returncode == 0
    assert "VERDICT_REDIS_NAMESPACE (default: verdict;" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (("validate", "--stores", ""), {}, "--stores: must name a folder of policy stores"),
        (
            ("serve", "--workers", "1", "--stores="),
            {},
            "--stores: must name a folder of policy stores",
        ),
        (
            ("serve", "--workers", "1"),
            {"VERDICT_STORES": ""},
            "VERDICT_STORES='': must name a folder of policy stores",
        ),
        (
            ("serve", "--workers", "2"),
            {"VERDICT_STORES": " "},
            "VERDICT_STORES=' ': must name a folder of policy stores",
        ),
    ],
)
def test_an_empty_stores_folder_is_refused(
    args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    """An empty --stores or VERDICT_STORES is the working folder: serve in the repository
    served benchmarks, docs, src and tests as stores."""
    result = verdict(*args, env=env)
    assert (result.returncode, result.stderr, result.stdout) == (2, f"error: {line}\n", "")


NESTED = "holds policy stores of its own"


@pytest.mark.parametrize(
    "command",
    [
        ("validate",),
        ("version",),
        ("entities", "load", "--redis-url", "redis://127.0.0.1:1"),
        ("serve", "--workers", "1"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_folder_holding_a_folder_of_stores_is_named(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """`validate --stores .` in the repository exited 0 with `policies` for one store of 26
    policies, its store's schema unread; a folder whose subfolder holds stores is named."""
    shutil.copytree(POLICIES / "lending", tmp_path / "big" / "stores" / "lending")
    (tmp_path / "big" / "notes").mkdir()
    result = verdict(*command, "--stores", str(tmp_path / "big"))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == (
        f"error: --stores={tmp_path}/big: its folder stores {NESTED} (stores/lending); "
        f"use --stores {tmp_path}/big/stores\n"
    )


def test_the_repository_root_and_the_variable_are_named() -> None:
    """The folder given relative (`.`) is named as given; VERDICT_STORES as the variable."""
    root = POLICIES.parent
    result = subprocess.run(
        [sys.executable, "-m", "verdict", "validate", "--stores", "."],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"error: --stores=.: its folder policies {NESTED} (policies/lending); "
        "use --stores policies\n",
    )
    served = verdict("serve", "--workers", "1", env={"VERDICT_STORES": str(root)})
    assert (served.returncode, served.stderr) == (
        2,
        f"error: VERDICT_STORES={root}: its folder policies {NESTED} (policies/lending); "
        f"use VERDICT_STORES={POLICIES}\n",
    )


def test_a_store_of_only_policy_subfolders_still_loads(tmp_path: Path) -> None:
    """The loader reads a store's *.cedar files in every folder below it: a store whose
    policies all lie in subfolders, beside a tests/ folder of suites, is a store, not a
    folder of stores (only a schema marks a nested store)."""
    store = tmp_path / "stores" / "s"
    (store / "loans").mkdir(parents=True)
    (store / "tests").mkdir()
    (store / "loans" / "p.cedar").write_text("permit(principal, action, resource);\n")
    (store / "tests" / "suite.yaml").write_text("cases: []\n")
    result = verdict("validate", "--stores", str(tmp_path / "stores"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("s: 1 policies")


def test_variables_with_surrounding_whitespace_are_read_without_it(tmp_path: Path) -> None:
    """VERDICT_WORKERS=' 1 ' was read as 1 but VERDICT_LOG_LEVEL=' info ', VERDICT_STORES and
    VERDICT_LISTEN refused for an invisible space; every string setting is stripped (here the
    server gets as far as the stores folder, which is missing, after every setting read)."""
    env = {
        "VERDICT_LOG_LEVEL": " info ",
        "VERDICT_LOG_FORMAT": "json ",
        "VERDICT_STORES": f"{tmp_path}/missing ",
        "VERDICT_LISTEN": " 127.0.0.1:21061",
        "VERDICT_WORKERS": " 1 ",
    }
    result = verdict("serve", env=env)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2,
        f"error: {tmp_path}/missing:0: policy stores folder not found",
    )


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "VERDICT_LOG_FORMAT",
            "jsn ",
            "VERDICT_LOG_FORMAT='jsn ': must be one of auto, json, console",
        ),
        (
            "VERDICT_LOG_LEVEL",
            "",
            "VERDICT_LOG_LEVEL='': must be one of debug, info, warning, error",
        ),
        (
            "VERDICT_REDIS_URL",
            " http://u:s3cret@x/0",
            "VERDICT_REDIS_URL=' http://x/0': must be a redis://, rediss:// or unix:// URL",
        ),
    ],
)
def test_a_refused_value_with_whitespace_or_none_is_quoted(
    name: str, value: str, line: str
) -> None:
    """`VERDICT_LOG_FORMAT=json : must be one of ...` hid its trailing space: a value that is
    empty or has surrounding whitespace is shown quoted (still without a password)."""
    assert serve(env={name: value}) == [f"error: {line}"]
