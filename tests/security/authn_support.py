"""Helpers for the identity tests: certificates on disk, JWTs, callers files, a real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.certs import CertificateAuthority, Issued
from tests.conftest import POLICIES
from verdict.app import App, build_app, start, stop
from verdict.config import Settings
from verdict.telemetry.metrics import AUTH_REFUSALS

ISSUER = "https://issuer.test"
AUDIENCE = "verdict"
LOAN_API = "spiffe://lending.test/ns/loans/sa/loan-api"


@dataclass
class Pki:
    """A CA with a server certificate on disk, and a second CA nobody trusts."""

    folder: Path
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, folder: Path) -> Pki:
        """Write ca.crt, server.crt and server.key into ``folder``."""
        ca = CertificateAuthority("Verdict Test CA")
        ca_file = folder / "ca.crt"
        ca_file.write_bytes(ca.pem)
        cert, key = ca.server().write(folder, "server")
        return cls(folder, ca, CertificateAuthority("Stranger CA"), ca_file, cert, key)

    def client(
        self,
        common_name: str,
        *,
        uris: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        valid: tuple[float, float] = (-300.0, 86_400.0),
    ) -> Issued:
        """A client certificate signed by the trusted CA (valid seconds from now)."""
        return self.ca.issue(common_name, uris=uris, dns=dns, client=True, valid=valid)

    def credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        """Channel credentials trusting the CA, presenting ``client`` if given."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.pem,
            private_key=client.key if client else None,
            certificate_chain=client.cert if client else None,
        )


class Issuer:
    """An RSA key pair that signs JWTs, with its public half in a JWKS file."""

    def __init__(self, folder: Path, kid: str = "key-1") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [{**public, "kid": kid, "alg": "RS256"}]}))
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, subject: str, **overrides: Any) -> dict[str, Any]:
        """Valid claims for ``subject``, with ``overrides`` applied."""
        now = int(time.time())
        return {
            "sub": subject,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
        } | overrides

    def token(self, subject: str, **overrides: Any) -> str:
        """An RS256 JWT signed by this issuer."""
        return jwt.encode(
            self.claims(subject, **overrides),
            self.key,
            algorithm="RS256",
            headers={"kid": self.kid},
        )

    def forged(self, subject: str, alg: str) -> str:
        """A JWT with ``alg`` none (no signature) or HS256 keyed with the RSA public key."""
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": self.kid}).encode())
        body = _b64(json.dumps(self.claims(subject)).encode())
        signing_input = f"{header}.{body}".encode()
        if alg == "none":
            return f"{header}.{body}."
        mac = hmac.new(self.public_pem, signing_input, hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_table(issuer: Issuer) -> str:
    """The [jwt] table of a callers file trusting ``issuer``."""
    return (
        f'[jwt]\njwks_file = "{issuer.jwks_file.name}"\nissuer = "{ISSUER}"\n'
        f'audience = "{AUDIENCE}"\nalgorithms = ["RS256"]\n'
    )


def write_callers(folder: Path, text: str) -> Path:
    """Write ``text`` as callers.toml in ``folder``."""
    path = folder / "callers.toml"
    path.write_text(text)
    return path


def token_sha256(token: str) -> str:
    """What the callers file stores for a static token."""
    return hashlib.sha256(token.encode()).hexdigest()


@asynccontextmanager
async def verdict_app(**overrides: Any) -> AsyncIterator[App]:
    """The sample policies served on free loopback ports with ``overrides`` to the settings."""
    defaults: dict[str, Any] = {
        "stores": POLICIES,
        "default_store": "lending",
        "listen": "127.0.0.1:0",
    }
    settings = Settings(**(defaults | overrides))
    app = build_app(settings)
    await start(app)
    try:
        yield app
    finally:
        await stop(app, 0)


def target(app: App) -> str:
    """Where the app's main port listens, under the name the server certificate carries."""
    assert app.server is not None
    return f"localhost:{app.server.port}"


# What a grpc.aio client reports when it wrote a request message after the server had ended the
# call: the write fails and replaces the status the server sent (grpc/grpc#36066, fix proposed
# in grpc/grpc#43486). A stream-shaped call the edge refuses on its first message races this.
CLIENT_WRITE_AFTER_STATUS = (grpc.StatusCode.INTERNAL, "Internal error from Core")


def auth_refusals() -> float:
    """Calls this process's edge has refused so far, every reason (verdict_auth_refusals_total)."""
    return sum(
        sample.value
        for metric in AUTH_REFUSALS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def refusal_code(
    outcome: Awaitable[tuple[grpc.StatusCode, Any]], expected: grpc.StatusCode
) -> grpc.StatusCode:
    """The code of a call to an in-process server that ``expected`` the edge to refuse. When
    the client's late write masked the server's status (CLIENT_WRITE_AFTER_STATUS), the
    server's own count decides: one more refusal means the server refused the call (its code
    is the one thing lost), so ``expected``; anything else is returned as the client saw it."""
    before = auth_refusals()
    code, details = await outcome
    if (code, details) == CLIENT_WRITE_AFTER_STATUS and auth_refusals() - before == 1:
        return expected
    return code
