"""Tests of caller identity: certificate properties, bearer tokens, static tokens and JWTs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.certs import CertificateAuthority
from tests.security.authn_support import AUDIENCE, ISSUER, Issuer
from verdict.errors import ConfigError, UnauthenticatedError
from verdict.transport.identity import (
    Authenticator,
    JwtSettings,
    JwtVerifier,
    bearer_token,
    certificate_identity,
    token_digest,
)


def _ssl(**props: list[bytes]) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], **props}


def _cert(common_name: str, *, uris: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> bytes:
    return CertificateAuthority().issue(common_name, uris=uris, dns=dns, client=True).cert


def test_certificate_identity_prefers_spiffe_then_uri_then_dns_and_never_the_cn() -> None:
    """The first URI SAN (a SPIFFE id) wins over a DNS SAN; the CN is no identity (name
    constraints do not bind it: attack round 15)."""
    spiffe = _cert("reporter", uris=("spiffe://lending.test/x",), dns=("worker.lending.test",))
    uri = _cert("reporter", uris=("https://svc.test/a", "spiffe://lending.test/x"))
    dns = _cert("reporter", dns=("worker.lending.test",))
    assert certificate_identity(_ssl(x509_pem_cert=[spiffe])) == "spiffe://lending.test/x"
    assert certificate_identity(_ssl(x509_pem_cert=[uri])) == "https://svc.test/a"
    assert certificate_identity(_ssl(x509_pem_cert=[dns])) == "worker.lending.test"
    assert certificate_identity(_ssl(x509_pem_cert=[_cert("reporter")])) is None  # a CN is none


def test_certificate_identity_is_read_from_the_certificate() -> None:
    """grpc's peer properties are not trusted (they stop at NUL); only the certificate is."""
    assert certificate_identity(_ssl(peer_spiffe_id=[b"spiffe://lending.test/x"])) is None
    nul = _cert("x", uris=("spiffe://lending.test/admin\x00.evil",))
    assert certificate_identity(_ssl(x509_pem_cert=[nul])) is None
    assert certificate_identity(_ssl(x509_pem_cert=[b"not a certificate"])) is None


def test_certificate_identity_needs_tls() -> None:
    """Without a TLS transport (or without a client certificate) there is no identity."""
    assert certificate_identity({"x509_pem_cert": [_cert("reporter")]}) is None
    assert certificate_identity(_ssl()) is None
    assert certificate_identity({}) is None


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "Basic abc")],
        [("authorization", "Bearer")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
)
def test_malformed_authorization_is_refused(metadata: list[tuple[str, str]]) -> None:
    """Another scheme, an empty token or two authorization entries are refused, not ignored."""
    with pytest.raises(UnauthenticatedError):
        bearer_token(metadata)


def test_bearer_token_is_read() -> None:
    """``Bearer <token>`` (any case of the scheme) yields the token; no entry yields None."""
    assert bearer_token([("authorization", "bearer tok-1")]) == "tok-1"
    assert bearer_token([("x-other", "v")]) is None


def test_static_tokens_are_matched_by_hash() -> None:
    """A static token authenticates as the caller its SHA-256 is listed for; others do not."""
    authenticator = Authenticator({token_digest("s3cret"): "entity-sync"}, None)
    assert authenticator.verify_token("s3cret") == "entity-sync"
    with pytest.raises(UnauthenticatedError):
        authenticator.verify_token("s3cret ")


def test_bad_token_does_not_fall_back_to_the_certificate() -> None:
    """A caller that sends a bad token is refused even when its certificate is valid."""
    authenticator = Authenticator({}, None)
    with pytest.raises(UnauthenticatedError):
        authenticator.identify(
            [("authorization", "Bearer nope")], lambda: _ssl(x509_pem_cert=[_cert("reporter")])
        )


def _verifier(issuer: Issuer) -> JwtVerifier:
    return JwtVerifier.load(JwtSettings(issuer.jwks_file, ISSUER, AUDIENCE, ("RS256",), 0))


def test_jwt_valid_gives_subject(tmp_path: Path) -> None:
    """A JWT signed by a JWKS key with the right issuer and audience yields its subject."""
    issuer = Issuer(tmp_path)
    assert _verifier(issuer).verify(issuer.token("svc-a")) == "svc-a"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 1_000_000},
        {"aud": "someone-else"},
        {"iss": "https://evil.test"},
        {"sub": ""},
    ],
    ids=["expired", "audience", "issuer", "empty-subject"],
)
def test_jwt_with_wrong_claims_is_refused(tmp_path: Path, claims: dict[str, object]) -> None:
    """An expired JWT, or one for another audience or from another issuer, is refused."""
    issuer = Issuer(tmp_path)
    with pytest.raises(UnauthenticatedError):
        _verifier(issuer).verify(issuer.token("svc-a", **claims))


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_forged_jwt_is_refused(tmp_path: Path, alg: str) -> None:
    """alg none, and HS256 keyed with the RSA public key, never verify."""
    issuer = Issuer(tmp_path)
    with pytest.raises(UnauthenticatedError):
        _verifier(issuer).verify(issuer.forged("svc-a", alg))


def test_jwt_from_another_key_is_refused(tmp_path: Path) -> None:
    """A JWT signed by a key that is not in the JWKS (same kid) is refused."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trusted, stranger = Issuer(tmp_path / "a"), Issuer(tmp_path / "b")
    with pytest.raises(UnauthenticatedError):
        _verifier(trusted).verify(stranger.token("svc-a"))


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), ()])
def test_symmetric_or_no_algorithms_are_a_config_error(
    tmp_path: Path, algorithms: tuple[str, ...]
) -> None:
    """HMAC algorithms, none, or an empty list are refused when the settings are loaded."""
    issuer = Issuer(tmp_path)
    with pytest.raises(ConfigError):
        JwtVerifier.load(JwtSettings(issuer.jwks_file, ISSUER, AUDIENCE, algorithms))


@pytest.mark.parametrize(
    "key",
    [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB", "kid": "p"},
    ],
    ids=["symmetric", "private"],
)
def test_jwks_with_symmetric_or_private_keys_is_a_config_error(
    tmp_path: Path, key: dict[str, str]
) -> None:
    """A JWKS that holds a shared secret or a private key is refused at start."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}))
    with pytest.raises(ConfigError, match=r"jwks\.json"):
        JwtVerifier.load(JwtSettings(path, ISSUER, AUDIENCE, ("RS256",)))


def test_remembered_jwt_still_expires(tmp_path: Path) -> None:
    """A JWT verified (and remembered) once is refused as soon as its exp has passed."""
    issuer = Issuer(tmp_path)
    verifier = _verifier(issuer)
    expires = int(time.time()) + 1
    token = issuer.token("svc-a", exp=expires)
    assert verifier.verify(token) == "svc-a"
    assert verifier.verify(token) == "svc-a"
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(UnauthenticatedError):
        verifier.verify(token)
