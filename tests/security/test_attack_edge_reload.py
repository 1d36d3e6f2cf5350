"""Hostile edits of the callers file, the JWKS and the TLS files while the server runs: none may
admit a revoked caller, hang the reload or the shutdown, fill memory or lose a later edit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.cases import lending_cases
from tests.certs import CertificateAuthority
from tests.security.authn_support import (
    LOAN_API,
    Issuer,
    Pki,
    jwt_table,
    target,
    token_sha256,
    verdict_app,
    write_callers,
)
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.app import App
from verdict.client import bearer, build_request
from verdict.errors import ConfigError
from verdict.transport import edge_rules, tls
from verdict.transport.callers import Callers, load_callers
from verdict.transport.edge_rules import ReloadingEdgeRules, load_edge_rules
from verdict.transport.tls import ReloadingCredentials, TlsFiles

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def entry(name: str, token: str) -> str:
    """A [[callers]] entry granting decisions on every store to a static-token caller."""
    return (
        f'\n[[callers]]\nid = "{name}"\nmethods = ["decisions"]\nstores = ["*"]\n'
        f'token_sha256 = ["{token_sha256(token)}"]\n'
    )


KEEP, REVOKED = entry("keep", "keep-token"), entry("revoked", "revoked-token")


async def code_of(app: App, token: str) -> grpc.StatusCode:
    """The status of one decision call made with ``token`` on a fresh plaintext channel."""
    assert app.server is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
        try:
            await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                REQUEST, metadata=bearer(token), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return OK


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """A plaintext server with a callers file granting ``keep`` and ``revoked``, checked only
    when the test calls ``check()`` (a long interval keeps the background watcher out)."""
    callers = write_callers(tmp_path, KEEP + REVOKED)
    async with verdict_app(callers_file=callers, callers_reload_seconds=3600) as running:
        yield running


def rules_of(app: App) -> ReloadingEdgeRules:
    """The app's reloading rules."""
    assert app.edge_rules is not None
    return app.edge_rules


def callers_path(app: App) -> Path:
    """The callers file the app reads."""
    return rules_of(app).callers_file


async def test_an_edit_landing_during_a_reload_is_not_lost(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revocation written just after a reload read the file is applied at the next check;
    the files were stamped after reading, so it counted as read and the caller stayed in."""
    path = callers_path(app)

    def read_then_revoke(file: Path) -> Callers:
        callers = load_callers(file)
        monkeypatch.setattr(edge_rules, "load_callers", load_callers)  # once
        path.write_text(KEEP)  # the revocation lands right after the read
        return callers

    path.write_text(KEEP + REVOKED + "\n")
    monkeypatch.setattr(edge_rules, "load_callers", read_then_revoke)
    assert await rules_of(app).check()
    assert await rules_of(app).check()
    assert await code_of(app, "revoked-token") is UNAUTHENTICATED
    assert await code_of(app, "keep-token") is OK


async def test_a_jwks_written_after_the_file_naming_it_is_picked_up(
    app: App, tmp_path: Path
) -> None:
    """A callers file naming a JWKS that is not there yet fails; the JWKS appearing later is
    read without another edit of the callers file (ConfigMaps update files one by one)."""
    issuer_dir = tmp_path / "later"
    issuer_dir.mkdir()
    issuer = Issuer(issuer_dir)
    jwks = issuer.jwks_file.read_text()
    issuer.jwks_file.unlink()
    table = jwt_table(issuer).replace('"jwks.json"', '"later/jwks.json"')
    jwt_caller = '\n[[callers]]\nid = "jwt-svc"\nmethods = ["decisions"]\nstores = ["*"]\n'
    callers_path(app).write_text(table + KEEP + jwt_caller)
    assert not await rules_of(app).check()
    assert await code_of(app, "revoked-token") is OK  # the last good rules still serve
    issuer.jwks_file.write_text(jwks)
    assert await rules_of(app).check()
    assert await code_of(app, issuer.token("jwt-svc")) is OK
    assert await code_of(app, "revoked-token") is UNAUTHENTICATED


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "huge", "dangling"])
async def test_a_callers_file_that_is_not_a_small_regular_file(app: App, kind: str) -> None:
    """A FIFO (it hung the reload thread for good, every later edit was ignored and the process
    never exited), a directory, a link to /dev/zero (memory), a 2 MiB file or a dangling link
    fail the reload at once and keep the last good rules; the next good edit is applied."""
    path = callers_path(app)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        path.write_text(KEEP + "#" * (2 * 1024 * 1024))
    else:
        path.symlink_to(path.parent / "nowhere.toml")
    assert not await asyncio.wait_for(rules_of(app).check(), timeout=10)
    assert await code_of(app, "revoked-token") is OK
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()
    path.write_text(KEEP)
    assert await asyncio.wait_for(rules_of(app).check(), timeout=10)
    assert await code_of(app, "revoked-token") is UNAUTHENTICATED


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_jwks_that_is_not_a_small_regular_file_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    """At start too: a FIFO JWKS used to hang ``serve``; now it is refused with its path."""
    issuer = Issuer(tmp_path)
    issuer.jwks_file.unlink()
    if kind == "fifo":
        os.mkfifo(issuer.jwks_file)
    elif kind == "dev-zero":
        issuer.jwks_file.symlink_to("/dev/zero")
    else:
        issuer.jwks_file.write_text(" " * (2 * 1024 * 1024))
    callers = write_callers(tmp_path, jwt_table(issuer) + KEEP)
    with pytest.raises(ConfigError) as error:
        load_edge_rules(callers)
    assert "jwks.json" in str(error.value)


async def test_deleting_the_jwks_keeps_the_last_good_keys(tmp_path: Path) -> None:
    """A JWKS deleted (or half-replaced) under a running server keeps the last good keys; it is
    read again once it is back."""
    issuer = Issuer(tmp_path)
    jwt_caller = '\n[[callers]]\nid = "jwt-svc"\nmethods = ["decisions"]\nstores = ["*"]\n'
    callers = write_callers(tmp_path, jwt_table(issuer) + jwt_caller)
    async with verdict_app(callers_file=callers, callers_reload_seconds=3600) as app:
        jwks = issuer.jwks_file.read_text()
        issuer.jwks_file.unlink()
        assert not await rules_of(app).check()
        assert await code_of(app, issuer.token("jwt-svc")) is OK
        issuer.jwks_file.write_text(jwks[: len(jwks) // 2])
        assert not await rules_of(app).check()
        rotated = Issuer(tmp_path)  # rewrites jwks.json with a new key, same kid
        assert await rules_of(app).check()
        assert await code_of(app, issuer.token("jwt-svc")) is UNAUTHENTICATED
        assert await code_of(app, rotated.token("jwt-svc")) is OK


async def test_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    """Kubernetes swaps a ``..data`` symlink to a new timestamped folder: a revocation made that
    way is applied, and the old folder being deleted afterwards changes nothing."""
    first, second = tmp_path / "..2025_01", tmp_path / "..2025_02"
    first.mkdir()
    second.mkdir()
    (first / "callers.toml").write_text(KEEP + REVOKED)
    (second / "callers.toml").write_text(KEEP)
    (tmp_path / "..data").symlink_to(first.name)
    callers = tmp_path / "callers.toml"
    callers.symlink_to("..data/callers.toml")
    async with verdict_app(callers_file=callers, callers_reload_seconds=3600) as app:
        assert await code_of(app, "revoked-token") is OK
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert await rules_of(app).check()
        (first / "callers.toml").unlink()
        first.rmdir()
        assert not await rules_of(app).check()
        assert await code_of(app, "revoked-token") is UNAUTHENTICATED


async def test_calls_during_reloads_see_one_version(app: App) -> None:
    """While the file flips between two versions, every call is decided by one of them: the
    kept caller is always served, the other either served or refused, never an error."""
    path = callers_path(app)
    rules = rules_of(app)
    seen: set[grpc.StatusCode] = set()

    async def flip() -> None:
        for index in range(30):
            text = KEEP if index % 2 else KEEP + REVOKED
            staged = path.with_suffix(".tmp")
            staged.write_text(text + "#" * index)
            os.replace(staged, path)
            await rules.check()

    async def calls() -> None:
        for _ in range(30):
            assert await code_of(app, "keep-token") is OK
            seen.add(await code_of(app, "revoked-token"))

    await asyncio.gather(flip(), calls())
    assert seen <= {OK, UNAUTHENTICATED}


def test_a_tls_rotation_completed_during_a_failed_read_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cert-manager writes the certificate, then the key: if the key lands while the fetcher
    is refusing the half-written pair, the whole pair is read at the next handshake. The
    failure used to be stamped after the key landed, so the good pair was never read."""
    pki = Pki.create(tmp_path)
    credentials = ReloadingCredentials(TlsFiles(pki.server_cert, pki.server_key, pki.ca_file))
    rotated = CertificateAuthority("Rotated CA").server()

    def check_then_finish_rotation(*args: object) -> None:
        try:
            tls_check_pair(*args)  # type: ignore[arg-type]
        finally:
            pki.server_key.write_bytes(rotated.key)

    tls_check_pair = tls.check_pair
    monkeypatch.setattr(tls, "check_pair", check_then_finish_rotation)
    pki.server_cert.write_bytes(rotated.cert)
    assert credentials._fetch() is None  # the half-written pair is refused
    monkeypatch.setattr(tls, "check_pair", tls_check_pair)
    assert credentials._fetch() is not None
    assert credentials.reloads == 1


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_tls_files_that_are_not_regular_keep_new_connections_working(
    tmp_path: Path, kind: str
) -> None:
    """A server key replaced by a FIFO or a link to /dev/zero: the handshake's fetcher refuses
    it at once (it used to block grpc's handshake thread, or read without end) and new
    connections keep getting the last good certificate."""
    pki = Pki.create(tmp_path)
    callers = write_callers(
        tmp_path,
        f'[[callers]]\nid = "{LOAN_API}"\nmethods = ["decisions"]\nstores = ["*"]\n',
    )
    async with verdict_app(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca_file,
        callers_file=callers,
    ) as app:
        pki.server_key.unlink()
        if kind == "fifo":
            os.mkfifo(pki.server_key)
        else:
            pki.server_key.symlink_to("/dev/zero")
        client = pki.client("loan-api", uris=(LOAN_API,))
        for _ in range(2):
            async with grpc.aio.secure_channel(target(app), pki.credentials(client)) as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                await stub.IsAuthorized(REQUEST, timeout=10)
