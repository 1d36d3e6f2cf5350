"""The callers file and the JWKS reload on change without a restart; a broken edit keeps the last
good rules, and calls never see a half-applied file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.cases import lending_cases
from tests.security.authn_support import Issuer, jwt_table, token_sha256, verdict_app, write_callers
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.app import App
from verdict.client import bearer, build_request

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
OLD, NEW = "old-service-token", "new-service-token"


def entry(name: str, token: str) -> str:
    """A [[callers]] entry granting decisions on every store to a token caller."""
    return (
        f'\n[[callers]]\nid = "{name}"\nmethods = ["decisions"]\nstores = ["*"]\n'
        f'token_sha256 = ["{token_sha256(token)}"]\n'
    )


def jwt_entry(subject: str) -> str:
    """A [[callers]] entry granting decisions to a JWT subject."""
    return f'\n[[callers]]\nid = "{subject}"\nmethods = ["decisions"]\nstores = ["*"]\n'


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` and rename it over: an atomic edit, as editors do."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    os.replace(staged, path)


async def code_of(stub: pb_grpc.AuthorizationServiceStub, token: str) -> grpc.StatusCode:
    """The status of one decision call made with ``token``."""
    try:
        await stub.IsAuthorized(REQUEST, metadata=tuple(bearer(token)), timeout=5)  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def reloads(result: str) -> float:
    """verdict_config_reloads_total for the callers file and ``result``."""
    labels = {"file": "callers", "result": result}
    return REGISTRY.get_sample_value("verdict_config_reloads_total", labels) or 0.0


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[App, Path, Issuer]]:
    """A server whose callers file grants the OLD token and the JWT subject "svc-a"."""
    issuer = Issuer(tmp_path)
    path = write_callers(tmp_path, jwt_table(issuer) + entry("old", OLD) + jwt_entry("svc-a"))
    async with verdict_app(callers_file=path, callers_reload_seconds=0.05) as app:
        yield app, path, issuer


@pytest.fixture
async def stub(
    served: tuple[App, Path, Issuer],
) -> AsyncIterator[pb_grpc.AuthorizationServiceStub]:
    """A stub over a plaintext channel to the served app."""
    app = served[0]
    assert app.server is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
        yield pb_grpc.AuthorizationServiceStub(channel)


async def wait_for_reload(app: App, count: int) -> None:
    """Return once the rules have been swapped ``count`` times (at most 5 s)."""
    assert app.edge_rules is not None
    for _ in range(500):
        if app.edge_rules.reloads >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the callers file was not reloaded {count} times")


async def test_a_caller_added_and_one_removed_take_effect_without_restart(
    served: tuple[App, Path, Issuer], stub: pb_grpc.AuthorizationServiceStub
) -> None:
    """Replacing the OLD token's entry by a NEW one: NEW is admitted, OLD refused, same process."""
    app, path, issuer = served
    assert await code_of(stub, OLD) == grpc.StatusCode.OK
    assert await code_of(stub, NEW) == grpc.StatusCode.UNAUTHENTICATED
    before = reloads("ok")
    replace_file(path, jwt_table(issuer) + entry("new", NEW) + jwt_entry("svc-a"))
    await wait_for_reload(app, 1)
    assert await code_of(stub, NEW) == grpc.StatusCode.OK
    assert await code_of(stub, OLD) == grpc.StatusCode.UNAUTHENTICATED
    assert reloads("ok") == before + 1


async def test_a_broken_edit_keeps_the_last_good_rules_and_the_next_good_one_is_taken(
    served: tuple[App, Path, Issuer], stub: pb_grpc.AuthorizationServiceStub
) -> None:
    """A half-written file (bad TOML) and a file with an unknown key are refused with file:line
    in the log; OLD keeps working meanwhile; fixing the file applies it."""
    app, path, issuer = served
    assert app.edge_rules is not None
    failures = reloads("error")
    with capture_logs() as logs:
        replace_file(path, jwt_table(issuer) + entry("new", NEW)[:40])
        assert not await app.edge_rules.check()
        replace_file(path, jwt_table(issuer) + entry("new", NEW) + "colour = 1\n")
        assert not await app.edge_rules.check()
    # The background check (every 0.05 s) may report an edit too: count distinct problems.
    problems = [e for e in logs if e["event"] == "callers_reload_failed"]
    assert all(str(path) + ":" in e["problems"][0] for e in problems)
    distinct = {e["problems"][0].split(": ", 1)[1] for e in problems}
    assert len(distinct) == 2
    assert any("unknown key 'colour'" in text for text in distinct)
    assert reloads("error") >= failures + 2
    assert await code_of(stub, OLD) == grpc.StatusCode.OK
    assert await code_of(stub, NEW) == grpc.StatusCode.UNAUTHENTICATED
    replace_file(path, jwt_table(issuer) + entry("new", NEW))
    await wait_for_reload(app, 1)
    assert await code_of(stub, NEW) == grpc.StatusCode.OK


async def test_a_rotated_jwks_key_is_trusted_and_the_retired_one_refused(
    served: tuple[App, Path, Issuer], stub: pb_grpc.AuthorizationServiceStub, tmp_path: Path
) -> None:
    """The identity provider rotates keys: the JWKS file changes alone (the callers file does
    not); tokens of the new key are admitted, and those of the retired key refused at once,
    even one that was verified (and remembered) before the rotation."""
    app, _, old_issuer = served
    old_token = old_issuer.token("svc-a")
    assert await code_of(stub, old_token) == grpc.StatusCode.OK
    (tmp_path / "next").mkdir()
    rotated = Issuer(tmp_path / "next", kid="key-2")
    replace_file(old_issuer.jwks_file, rotated.jwks_file.read_text())
    await wait_for_reload(app, 1)
    assert await code_of(stub, rotated.token("svc-a")) == grpc.StatusCode.OK
    assert await code_of(stub, old_token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_broken_jwks_keeps_the_keys_in_use(
    served: tuple[App, Path, Issuer], stub: pb_grpc.AuthorizationServiceStub
) -> None:
    """A JWKS overwritten with junk (or a private key) is refused; the old key keeps working."""
    app, _, issuer = served
    assert app.edge_rules is not None
    token = issuer.token("svc-a")
    good = issuer.jwks_file.read_text()
    replace_file(issuer.jwks_file, good[: len(good) // 2])
    assert not await app.edge_rules.check()
    assert await code_of(stub, token) == grpc.StatusCode.OK


async def test_calls_during_many_reloads_never_fail_for_a_caller_in_every_version(
    served: tuple[App, Path, Issuer], stub: pb_grpc.AuthorizationServiceStub
) -> None:
    """While the file is rewritten 40 times or more (other callers come and go, broken edits
    between), a caller present in every version is never refused."""
    app, path, issuer = served
    stop = asyncio.Event()
    codes: list[grpc.StatusCode] = []

    async def keep_calling() -> None:
        while not stop.is_set():
            codes.append(await code_of(stub, OLD))

    callers = asyncio.gather(*(keep_calling() for _ in range(4)))
    assert app.edge_rules is not None
    # Rewrite until ten versions were taken (a poll every 50 ms sees some rewrites only as
    # their successor), bounded: 400 rewrites are 8 s.
    for round_number in range(400):
        extra = entry(f"svc-{round_number}", f"token-{round_number}")
        text = jwt_table(issuer) + entry("old", OLD) + extra
        replace_file(path, text if round_number % 5 else text + "[[callers]\n")
        await asyncio.sleep(0.02)
        if round_number >= 40 and app.edge_rules.reloads >= 10:
            break
    stop.set()
    await callers
    assert app.edge_rules.reloads >= 10
    assert codes
    assert set(codes) == {grpc.StatusCode.OK}
