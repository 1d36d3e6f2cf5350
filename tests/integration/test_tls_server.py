"""TLS and mutual TLS against a real server with certificates generated in the test."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import lending_cases
from tests.certs import CertificateAuthority
from tests.security.authn_support import (
    LOAN_API,
    Pki,
    target,
    token_sha256,
    verdict_app,
    write_callers,
)
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.client import AsyncVerdictClient, bearer, build_request

CALLERS = f"""
[[callers]]
id = "spiffe://lending.test/ns/loans/*"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "worker.lending.test"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "reporter"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "token-caller"
methods = ["decisions"]
stores = ["lending"]
token_sha256 = ["{token_sha256("tok-1")}"]
"""
CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)
EXPECTED = pb.DECISION_ALLOW if CASE.expect == "allow" else pb.DECISION_DENY
SPIFFE_CALLER = "spiffe://lending.test/ns/loans/loan-api"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA, a server certificate for localhost, and a stranger CA."""
    return Pki.create(tmp_path)


def tls_settings(pki: Pki, *, mutual: bool) -> dict[str, object]:
    """Settings overrides for TLS (and mutual TLS) with the test callers file."""
    return {
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca_file if mutual else None,
        "callers_file": write_callers(pki.folder, CALLERS),
        "health_listen": "127.0.0.1:0",
    }


async def decide(address: str, credentials: grpc.ChannelCredentials, **kw: object) -> int:
    """One decision over a fresh TLS channel; returns the decision."""
    async with AsyncVerdictClient(address, credentials=credentials, **kw) as client:  # type: ignore[arg-type]
        response = await client.send(REQUEST)
    return response.decision


async def refused(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of one decision that must fail."""
    async with AsyncVerdictClient(address, credentials=credentials) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.send(REQUEST)
    return info.value.code()


async def test_tls_serves_a_token_caller(pki: Pki) -> None:
    """With TLS (no client CA) a caller with a granted token gets decisions; plaintext fails."""
    async with verdict_app(**tls_settings(pki, mutual=False)) as app:
        address = target(app)
        creds = pki.credentials()
        assert await decide(address, creds, metadata=bearer("tok-1")) == EXPECTED
        assert await refused(address, creds) is grpc.StatusCode.UNAUTHENTICATED
        assert await refused(address, None) is grpc.StatusCode.UNAVAILABLE


async def test_mtls_spiffe_identity_is_granted(pki: Pki) -> None:
    """A client certificate with a SPIFFE URI SAN is the caller its glob grants."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        client = pki.client("loan-api", uris=(SPIFFE_CALLER,))
        assert await decide(target(app), pki.credentials(client)) == EXPECTED


async def test_mtls_dns_san_then_no_common_name(pki: Pki) -> None:
    """Without a URI SAN the DNS SAN is the caller id; without either, no identity: the
    subject CN, which name constraints do not bind, names no caller (attack round 15)."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        worker = pki.client("ignored-cn", dns=("worker.lending.test",))
        reporter = pki.client("reporter")
        assert await decide(target(app), pki.credentials(worker)) == EXPECTED
        code = await refused(target(app), pki.credentials(reporter))
        assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_mtls_unknown_certificate_identity_is_denied(pki: Pki) -> None:
    """A valid client certificate whose identity no entry grants gets PERMISSION_DENIED."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        stranger = pki.client("x", uris=(LOAN_API.replace("loans", "payments"),))
        code = await refused(target(app), pki.credentials(stranger))
        assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_mtls_refuses_a_client_without_certificate(pki: Pki) -> None:
    """With a client CA set, a client presenting no certificate never gets a call through."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        code = await refused(target(app), pki.credentials())
        assert code is grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_certificate_from_another_ca(pki: Pki) -> None:
    """A client certificate signed by a CA the server does not trust is refused."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        forged = pki.other_ca.issue("reporter", uris=(SPIFFE_CALLER,), client=True)
        creds = grpc.ssl_channel_credentials(pki.ca.pem, forged.key, forged.cert)
        assert await refused(target(app), creds) is grpc.StatusCode.UNAVAILABLE


async def test_health_is_plaintext_on_its_own_port(pki: Pki) -> None:
    """While the main port speaks TLS, grpc.health.v1 answers in plaintext on --health-listen."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        assert app.server is not None
        assert app.server.health_port is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over, as cert-manager's swap does."""
    temporary = path.with_suffix(".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


async def test_certificate_rotation_without_restart_or_dropped_calls(pki: Pki) -> None:
    """New server certificate files are served to new connections; open ones keep working."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        address = target(app)
        client_cert = pki.client("loan-api", uris=(SPIFFE_CALLER,))
        failures: list[BaseException] = []
        done = asyncio.Event()

        async def steady() -> int:
            answered = 0
            async with AsyncVerdictClient(address, credentials=pki.credentials(client_cert)) as c:
                while not done.is_set():
                    try:
                        await c.send(REQUEST)
                        answered += 1
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc)
            return answered

        load = asyncio.create_task(steady())
        await asyncio.sleep(0.2)
        new_ca = CertificateAuthority("Rotated CA")
        rotated = new_ca.server()
        replace_atomically(pki.server_key, rotated.key)
        replace_atomically(pki.server_cert, rotated.cert)
        new_creds = grpc.ssl_channel_credentials(new_ca.pem, client_cert.key, client_cert.cert)
        assert await decide(address, new_creds) == EXPECTED
        assert await refused(address, pki.credentials(client_cert)) is grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.2)
        done.set()
        answered = await load
        assert failures == []
        assert answered > 0


async def test_half_written_rotation_keeps_the_last_good_certificate(pki: Pki) -> None:
    """A key that does not match the new certificate is not taken; new connections still work."""
    async with verdict_app(**tls_settings(pki, mutual=True)) as app:
        client_cert = pki.client("loan-api", uris=(SPIFFE_CALLER,))
        replace_atomically(pki.server_cert, CertificateAuthority("Rotated CA").server().cert)
        assert await decide(target(app), pki.credentials(client_cert)) == EXPECTED
