"""Caller identity: from the verified client certificate, or from a bearer token (static or JWT)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from verdict.errors import ConfigError, Diagnostic, UnauthenticatedError

# Only public-key algorithms: a JWKS holds public keys, and an HMAC "secret" that is really a
# public key is the classic forgery (anyone can read the key, so anyone can sign).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
# Verified JWTs remembered until they expire: a service re-sends the same token for minutes,
# and verifying one costs ~200 µs (PyJWT's base64 checks, then RSA), a third of a decision.
JWT_CACHE_SIZE = 10_000
AuthContext = Mapping[str, Iterable[bytes]]


def token_digest(token: str) -> str:
    """The hex SHA-256 of a static token: what the callers file stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def certificate_identity(auth_context: AuthContext) -> str | None:
    """The caller id of a verified client certificate: SPIFFE id / URI SAN, DNS SAN, subject CN.

    grpc core puts these properties in the auth context only for a certificate that verified
    against the client CA (the server requires one whenever a client CA is configured).
    """
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    for key in ("peer_spiffe_id", "peer_uri", "peer_dns", "x509_common_name"):
        for value in auth_context.get(key, ()):
            return bytes(value).decode("utf-8", "replace")
    return None


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
            document = json.loads(settings.jwks_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _config_error(path, 0, f"cannot read the JWKS file ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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
            return certificate_identity(auth_context())
        return self.verify_token(token)

    def verify_token(self, token: str) -> str:
        """The caller id of a static token or a JWT; UnauthenticatedError otherwise."""
        caller = self._tokens.get(token_digest(token))
        if caller is not None:
            return caller
        if self._jwt is not None and token.count(".") == 2:
            return self._jwt.verify(token)
        raise UnauthenticatedError("unknown_token")
