"""Caller identity: from the verified client certificate, or from a bearer token (static or JWT)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.x509.oid import NameOID

from verdict.errors import ConfigError, Diagnostic, UnauthenticatedError
from verdict.files import FileReadError, read_text

# Only public-key algorithms: a JWKS holds public keys, and an HMAC "secret" that is really a
# public key is the classic forgery (anyone can read the key, so anyone can sign).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# A JWKS file is a few keys; a file swapped for /dev/zero must not fill memory.
MAX_JWKS_BYTES = 1024 * 1024
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
# Verified JWTs remembered until they expire: a service re-sends the same token for minutes,
# and verifying one costs ~200 µs (PyJWT's base64 checks, then RSA), a third of a decision.
JWT_CACHE_SIZE = 10_000
AuthContext = Mapping[str, Iterable[bytes]]
# NUL and the other C0 controls (and DEL): never part of a name a CA should have signed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Client certificates' ids remembered by their PEM: one parse per certificate, not per call.
CERTIFICATE_CACHE_SIZE = 10_000


def token_digest(token: str) -> str:
    """The hex SHA-256 of a static token: what the callers file stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def certificate_identity(auth_context: AuthContext) -> str | None:
    """The caller id of a verified client certificate: its first URI SAN (the SPIFFE id), else
    its first DNS SAN; None without one, for a CA's certificate, or when any of its names holds
    a control character. Its validity period is checked at each call (``Authenticator``).

    grpc core puts these properties in the auth context only for a certificate that verified
    against the client CA (the server requires one whenever a client CA is configured). The
    names are read from the certificate itself (``x509_pem_cert``), not from grpc's
    ``peer_uri``/``peer_dns``/``x509_common_name``: grpc cuts those at the first NUL byte, so a
    certificate for ``spiffe://t/admin\\0.anything`` was taken for ``spiffe://t/admin``.

    The subject CN is no identity: name constraints on an intermediate CA bind its SANs, and
    its CN only when the CN reads as a host name, so a leaf of an intermediate limited to
    ``tenant-b.test`` with CN ``spiffe://lending.test/.../admin`` (no SAN, or an e-mail SAN)
    was taken for the admin (attack round 15).
    """
    pem = peer_certificate(auth_context)
    found = None if pem is None else read_certificate(pem)
    return None if found is None else found.caller


def peer_certificate(auth_context: AuthContext) -> bytes | None:
    """The PEM of the client certificate grpc verified; None without TLS or a certificate."""
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    pems = [bytes(pem) for pem in auth_context.get("x509_pem_cert", ())]
    return pems[0] if len(pems) == 1 else None


@dataclass(frozen=True)
class CertificateCaller:
    """Who a client certificate names, and the period in which it may be used."""

    caller: str
    not_before: datetime
    not_after: datetime

    def problem_at(self, now: datetime) -> str | None:
        """Why the certificate cannot be used at ``now`` (a reason for the log), or None.

        The handshake checks the period, but a resumed TLS session skips that check, and a
        connection outlives it: an expired certificate kept being admitted through both
        (attack round 15)."""
        if now > self.not_after:
            return "expired_certificate"
        if now < self.not_before:
            return "certificate_not_yet_valid"
        return None


def read_certificate(pem: bytes) -> CertificateCaller | None:
    """The caller a PEM certificate names and its validity period; None when it names none."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        if _is_authority(certificate):
            return None  # a CA's own certificate identifies no workload (round 15)
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
            dns = names.value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            uris, dns = [], []
        common = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        period = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    except ValueError:  # a name cryptography cannot decode: no identity rather than a guess
        return None
    candidates = [*uris, *dns]
    # The CN is looked at only for control characters (it is no identity).
    checked = [*candidates, *(name for name in common if isinstance(name, str))]
    if any(_CONTROL.search(name) for name in checked):
        return None
    return CertificateCaller(candidates[0], *period) if candidates else None


def _is_authority(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of the one ``authorization: Bearer <token>`` entry; None without one."""
    found = [value for key, value in metadata if key == "authorization"]
    if not found:
        return None
    if len(found) > 1 or not isinstance(found[0], str):
        raise UnauthenticatedError("malformed_authorization")
    scheme, _, token = found[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("malformed_authorization")
    return token.strip()


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are verified: against which keys, for which issuer and audience."""

    jwks_file: Path
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    leeway_seconds: float = 30.0


class JwtVerifier:
    """Verifies JWTs against a JWKS file; the caller id is the ``sub`` claim."""

    def __init__(self, settings: JwtSettings, keys: Mapping[str | None, jwt.PyJWK]) -> None:
        self._settings = settings
        self._keys = dict(keys)
        self._verified: dict[str, tuple[str, float]] = {}  # token -> (subject, exp)

    @classmethod
    def load(cls, settings: JwtSettings) -> JwtVerifier:
        """Read the JWKS file; raises ConfigError naming the file and the key at fault."""
        path = str(settings.jwks_file)
        bad = [a for a in settings.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not settings.algorithms:
            problem = f"algorithms {bad} are not allowed" if bad else "no algorithms"
            raise _config_error(path, 0, f"{problem}; use {sorted(ASYMMETRIC_ALGORITHMS)}")
        try:
            document = json.loads(read_text(settings.jwks_file, MAX_JWKS_BYTES))
        except FileReadError as exc:
            raise _config_error(path, 0, f"cannot read the JWKS file ({exc})") from None
        except json.JSONDecodeError as exc:
            line = getattr(exc, "lineno", 0)
            raise _config_error(path, line, "the JWKS file is not valid JSON") from None
        return cls(settings, _jwks_keys(path, document, settings.algorithms))

    def verify(self, token: str) -> str:
        """The verified ``sub`` of ``token``; UnauthenticatedError for anything else."""
        known = self._verified.get(token)
        if known is not None and time.time() < known[1]:
            return known[0]
        subject, expires = self._verify_now(token)
        if len(self._verified) >= JWT_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (subject, expires)
        return subject

    def _verify_now(self, token: str) -> tuple[str, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthenticatedError("bad_jwt") from None
        key = self._key_for(header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(self._settings.algorithms),
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("expired_jwt") from None
        except jwt.PyJWTError:
            raise UnauthenticatedError("bad_jwt") from None
        subject, expires = claims.get("sub"), claims.get("exp")
        if not isinstance(subject, str) or not subject or not isinstance(expires, int | float):
            raise UnauthenticatedError("bad_jwt")
        # Remembered until exp itself (no leeway), never longer than a decode would accept.
        return subject, float(expires)

    def _key_for(self, header: Mapping[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if header.get("alg") not in self._settings.algorithms:
            raise UnauthenticatedError("bad_jwt")
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnauthenticatedError("bad_jwt")
        return key


def _jwks_keys(
    path: str, document: object, algorithms: tuple[str, ...]
) -> dict[str | None, jwt.PyJWK]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _config_error(path, 0, 'a JWKS needs a non-empty "keys" array')
    keys: dict[str | None, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        where = f"keys[{index}]"
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue  # encryption keys and junk are not signing keys
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            raise _config_error(path, 0, f"{where}: only RSA, EC and OKP public keys are accepted")
        if any(part in entry for part in ("d", "p", "q")):
            raise _config_error(path, 0, f"{where}: a private key has no place in a JWKS file")
        try:
            key = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError as exc:
            raise _config_error(path, 0, f"{where}: {type(exc).__name__}") from None
        if key.algorithm_name not in algorithms:
            raise _config_error(path, 0, f"{where}: algorithm {key.algorithm_name} not allowed")
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    if not keys:
        raise _config_error(path, 0, "the JWKS holds no signing keys")
    return keys


def _config_error(path: str, line: int, message: str) -> ConfigError:
    return ConfigError([Diagnostic(path, line, message)])


class Authenticator:
    """Finds the caller of a call: a bearer token if one is sent, else the client certificate."""

    def __init__(self, tokens: Mapping[str, str], jwt_verifier: JwtVerifier | None) -> None:
        self._tokens = dict(tokens)  # sha256 hex -> caller id
        self._jwt = jwt_verifier
        self._certificates: dict[bytes, CertificateCaller | None] = {}  # PEM -> caller

    def identify(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        auth_context: Callable[[], AuthContext],
    ) -> str | None:
        """The caller id, None when the call carries no identity at all.

        A token that is sent must verify: a bad token never falls back to the certificate.
        """
        token = bearer_token(metadata)
        if token is None:
            return self.certificate_caller(auth_context())
        return self.verify_token(token)

    def certificate_caller(self, auth_context: AuthContext) -> str | None:
        """``certificate_identity``, remembered per certificate (a parse costs ~50 µs), its
        validity period checked at every call: UnauthenticatedError outside it."""
        pem = peer_certificate(auth_context)
        if pem is None:
            return None
        if pem in self._certificates:
            found = self._certificates[pem]
        else:
            found = read_certificate(pem)
            if len(self._certificates) >= CERTIFICATE_CACHE_SIZE:
                self._certificates.pop(next(iter(self._certificates)))  # the oldest entry
            self._certificates[pem] = found
        if found is None:
            return None
        problem = found.problem_at(datetime.now(UTC))
        if problem is not None:
            raise UnauthenticatedError(problem)
        return found.caller

    def verify_token(self, token: str) -> str:
        """The caller id of a static token or a JWT; UnauthenticatedError otherwise."""
        caller = self._tokens.get(token_digest(token))
        if caller is not None:
            return caller
        if self._jwt is not None and token.count(".") == 2:
            return self._jwt.verify(token)
        raise UnauthenticatedError("unknown_token")
