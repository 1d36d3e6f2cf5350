"""Setting values the CLI once took for others: Redis databases, namespaces, whitespace."""

from __future__ import annotations

import json

import pytest

from tests.conftest import POLICIES
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
