"""Setting values the CLI once took for others: Redis databases, namespaces, whitespace."""

from __future__ import annotations

import pytest

from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import verdict
from tests.integration.test_serve_errors import serve

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
