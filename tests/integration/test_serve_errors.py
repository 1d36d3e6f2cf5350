"""`verdict serve` that cannot start says why in one `error:` line each and exits 2."""

from __future__ import annotations

import pytest

from tests.conftest import POLICIES
from tests.integration.test_cli_behaviour import verdict


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
