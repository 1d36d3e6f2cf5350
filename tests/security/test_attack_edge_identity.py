"""Hostile callers at the mutual-TLS edge: certificates, bearer tokens and JWTs that must not
buy an identity (or a better one) than the callers file grants."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import jwt
import pytest

from tests.cases import lending_cases
from tests.certs import Issued
from tests.security.authn_support import (
    Issuer,
    Pki,
    jwt_table,
    target,
    token_sha256,
    verdict_app,
    write_callers,
)
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.client import bearer, build_request

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
ADMIN = "spiffe://lending.test/ns/ops/sa/admin"
LOANS = "spiffe://lending.test/ns/loans/sa/x"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
Metadata = Sequence[tuple[str, str | bytes]]


def callers_text(issuer: Issuer) -> str:
    """Loans workloads decide on lending; one admin; a static-token and a JWT decider."""
    return jwt_table(issuer) + (
        '\n[[callers]]\nid = "spiffe://lending.test/ns/loans/sa/*"\nmethods = ["decisions"]\n'
        'stores = ["lending"]\n'
        f'\n[[callers]]\nid = "{ADMIN}"\n'
        'methods = ["decisions", "entity-reads", "entity-writes", "admin"]\nstores = ["*"]\n'
        '\n[[callers]]\nid = "tok"\nmethods = ["decisions"]\nstores = ["lending"]\n'
        f'token_sha256 = ["{token_sha256("s3cret")}"]\n'
        '\n[[callers]]\nid = "jwt-svc"\nmethods = ["decisions"]\nstores = ["lending"]\n'
    )


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[App]:
    """A server requiring client certificates, with a callers file and a JWKS."""
    pki = Pki.create(tmp_path)
    issuer = Issuer(tmp_path)
    callers = write_callers(tmp_path, callers_text(issuer))
    async with verdict_app(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca_file,
        callers_file=callers,
    ) as app:
        app.pki = pki  # type: ignore[attr-defined]
        app.issuer = issuer  # type: ignore[attr-defined]
        yield app


async def call(
    app: App,
    client: Issued | None,
    *,
    method: str = "decide",
    metadata: Metadata = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.StatusCode:
    """The status of one call on a fresh TLS channel presenting ``client``."""
    pki: Pki = app.pki  # type: ignore[attr-defined]
    async with grpc.aio.secure_channel(target(app), credentials or pki.credentials(client)) as ch:
        pending: object
        if method == "decide":
            pending = pb_grpc.AuthorizationServiceStub(ch).IsAuthorized(
                REQUEST, metadata=metadata, timeout=10
            )
        else:
            get = epb.GetEntitiesRequest(policy_store_id="lending")
            pending = epb_grpc.EntityServiceStub(ch).GetEntities(get, metadata=metadata, timeout=10)
        try:
            await pending
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return OK


async def test_certificates_that_fail_the_handshake(mtls: App) -> None:
    """No certificate, another CA's, an expired or a not-yet-valid one never reach a method."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    stranger = pki.other_ca.issue("x", uris=(ADMIN,), client=True)
    foreign = grpc.ssl_channel_credentials(pki.ca.pem, stranger.key, stranger.cert)
    assert await call(mtls, None) is UNAVAILABLE
    assert await call(mtls, None, credentials=foreign) is UNAVAILABLE
    assert await call(mtls, pki.client("x", uris=(ADMIN,), valid=(-7200, -3600))) is UNAVAILABLE
    assert await call(mtls, pki.client("x", uris=(ADMIN,), valid=(3600, 7200))) is UNAVAILABLE


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://lending.test/ns/loans/sa/x/../admin",
        "spiffe://lending.test/ns/loans/sa/x/",
        "SPIFFE://lending.test/ns/loans/sa/x",
        "spiffe://LENDING.test/ns/loans/sa/x",
        "spiffe://lending.test/ns/ops/sa/admin/",
        "spiffe://lending.test/ns/ops/sa/Admin",
        "spiffe://lending.test/ns/ops/%73a/admin",
    ],
)
async def test_spiffe_ids_that_almost_match_get_nothing(mtls: App, uri: str) -> None:
    """Ids that a glob or an exact entry matches only after normalising are granted nothing."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    client = pki.client("x", uris=(uri,))
    assert await call(mtls, client) is DENIED
    assert await call(mtls, client, method="read") is DENIED


async def test_percent_encoded_slashes_stay_in_one_segment(mtls: App) -> None:
    """``%2F`` is not a separator: the loans glob matches it as one segment, nothing more."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    client = pki.client("x", uris=(f"{LOANS}%2F..%2F..%2Fops%2Fsa%2Fadmin",))
    assert await call(mtls, client) is OK
    assert await call(mtls, client, method="read") is DENIED


@pytest.mark.parametrize(
    ("uris", "dns", "common_name"),
    [
        ((f"{ADMIN}\x00.loans.test",), (), "x"),
        ((f"{ADMIN}\x00",), (), "x"),
        ((), ("admin\x00.evil.test",), "x"),
        ((), (), f"{ADMIN}\x00.evil"),
        ((f"{LOANS}\n{ADMIN}",), (), "x"),
    ],
)
async def test_a_nul_in_a_certificate_name_is_no_identity(
    mtls: App, uris: tuple[str, ...], dns: tuple[str, ...], common_name: str
) -> None:
    """grpc cuts peer names at NUL: ``admin\\0.loans.test`` was admitted as admin. Now any
    control character in a certificate's names leaves the call without an identity."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    client = pki.client(common_name, uris=uris, dns=dns)
    assert await call(mtls, client, method="read") is UNAUTHENTICATED
    assert await call(mtls, client) is UNAUTHENTICATED


async def test_the_first_uri_san_is_the_identity(mtls: App) -> None:
    """With several URI SANs the first is the caller, whatever the others say."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    assert await call(mtls, pki.client("x", uris=(LOANS, ADMIN)), method="read") is DENIED
    assert await call(mtls, pki.client("x", uris=("https://x.test", ADMIN)), method="read") is (
        DENIED
    )
    assert await call(mtls, pki.client(ADMIN, dns=("x.test",)), method="read") is DENIED


async def test_tls_without_client_ca_takes_no_certificate_identity(tmp_path: Path) -> None:
    """Without a client CA a client certificate is never asked for: even one naming the admin
    (signed by the server's own CA) leaves the call unauthenticated."""
    pki = Pki.create(tmp_path)
    callers = write_callers(tmp_path, callers_text(Issuer(tmp_path)))
    async with verdict_app(
        tls_cert=pki.server_cert, tls_key=pki.server_key, callers_file=callers
    ) as app:
        app.pki = pki  # type: ignore[attr-defined]
        client = pki.client(ADMIN, uris=(ADMIN,))
        assert await call(app, client, method="read") is UNAUTHENTICATED
        assert await call(app, client, metadata=bearer("s3cret")) is OK


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer s3cret", OK),
        ("bearer s3cret", OK),
        ("BEARER  s3cret ", OK),
        (f"Bearer {token_sha256('s3cret')}", UNAUTHENTICATED),
        ("Bearer S3CRET", UNAUTHENTICATED),
        ("Token s3cret", UNAUTHENTICATED),
        ("Bearer", UNAUTHENTICATED),
        ("Bearers3cret", UNAUTHENTICATED),
        ("Bearer " + "a." * 3000 + "b", UNAUTHENTICATED),
    ],
)
async def test_bearer_spellings(mtls: App, value: str, expected: grpc.StatusCode) -> None:
    """The scheme is case-insensitive; the stored hash itself, other schemes, an empty or
    a mangled token are refused, and a refused token never falls back to the certificate."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    loans = pki.client("x", uris=(LOANS,))
    assert await call(mtls, loans, metadata=(("authorization", value),)) is expected


async def test_token_metadata_that_is_not_one_plain_entry(mtls: App) -> None:
    """Two authorization entries are refused; ``authorization-bin`` is not a token at all."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    loans = pki.client("x", uris=(LOANS,))
    twice: Metadata = (("authorization", "Bearer s3cret"), ("authorization", "Bearer s3cret"))
    assert await call(mtls, loans, metadata=twice) is UNAUTHENTICATED
    binary: Metadata = (("authorization-bin", b"Bearer s3cret"),)
    assert await call(mtls, loans, metadata=binary, method="read") is DENIED
    huge: Metadata = (("authorization", "Bearer " + "x" * 20_000),)
    assert await call(mtls, loans, metadata=huge) is grpc.StatusCode.RESOURCE_EXHAUSTED


def signed(issuer: Issuer, *, alg: str = "RS256", key: object = None, **changes: object) -> str:
    """A JWT for jwt-svc with ``changes`` to its claims (None removes one); ``kid``, ``jku``,
    ``jwk`` and ``crit`` go to the header."""
    header_keys = {"kid", "jku", "jwk", "crit"}
    headers = {"kid": issuer.kid} | {k: v for k, v in changes.items() if k in header_keys}
    claims = issuer.claims("jwt-svc") | {k: v for k, v in changes.items() if k not in header_keys}
    body = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(body, key or issuer.key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


async def test_jwt_forgeries_over_the_wire(mtls: App, tmp_path: Path) -> None:
    """Missing exp, nbf or iat in the future, other audiences or issuers, unknown kids,
    another algorithm on the same key, another key under the same kid, an embedded jwk and
    ``crit`` are all UNAUTHENTICATED; an audience list that names Verdict is accepted."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    issuer: Issuer = mtls.issuer  # type: ignore[attr-defined]
    loans = pki.client("x", uris=(LOANS,))
    (tmp_path / "stranger").mkdir()
    stranger = Issuer(tmp_path / "stranger")  # its own folder: never the server's JWKS
    now = int(issuer.claims("x")["iat"])
    stranger_jwk = json.loads(stranger.jwks_file.read_text())["keys"][0]
    refused = [
        signed(issuer, exp=None),
        signed(issuer, nbf=now + 3600),
        signed(issuer, iat=now + 3600),
        signed(issuer, aud=["other"]),
        signed(issuer, iss="https://issuer.test/"),
        signed(issuer, kid="key-2"),
        signed(issuer, alg="PS256"),
        signed(issuer, alg="RS512"),
        signed(issuer, key=stranger.key),
        signed(issuer, key=stranger.key, jwk=stranger_jwk),
        signed(issuer, crit=["exp"]),
        signed(issuer, sub=5),
        signed(issuer, exp=str(now + 300)),
        issuer.forged("jwt-svc", "none"),
        issuer.forged("jwt-svc", "HS256"),
    ]
    for token in refused:
        assert await call(mtls, loans, metadata=bearer(token)) is UNAUTHENTICATED, token
    assert await call(mtls, loans, metadata=bearer(signed(issuer, aud=["x", "verdict"]))) is OK
    assert await call(mtls, loans, metadata=bearer(signed(issuer, jku="http://evil"))) is OK
