"""Attack round 15: mutual TLS and caller identity, revocations across two replicas on one Redis
while the invalidation channel is attacked, deletes and re-creations under a forbid, writes whose
answer comes before Redis does, and entity calls across stores by a caller granted one store.
Real gRPC with certificates made here (a root, a name-constrained intermediate, leaves), real
`verdict serve` processes (one and two workers) over a real redis-server on loopback; cedarpy
is the oracle for decisions.

Findings (each a test asserting the correct behaviour; all four fixed: the CN is no identity,
a CA certificate is none, the validity period is checked at every call, and a write that may
have reached Redis, all its tries failed, is answered DEADLINE_EXCEEDED "may still be applied"):

1. **A name-constrained issuer mints any caller through the subject CN** (wrong ALLOW of an
   identity). An intermediate CA under the client CA, constrained to ``tenant-b.test`` (URI and
   DNS), cannot put the admin's SPIFFE id in a URI SAN (the handshake fails: "permitted subtree
   violation"), but a leaf it signs with *no* SAN and the subject CN
   ``spiffe://lending.test/ns/ops/sa/admin`` passes the handshake (BoringSSL checks a CN against
   DNS constraints only when it looks like a host name) and Verdict, falling back to the CN, takes
   it for the admin: GetEntities OK. A CN that is a host name (``admin.lending.test``) passes too
   once the leaf carries any SAN that is not a DNS name (an e-mail or IP SAN): BoringSSL then
   ignores the CN, Verdict does not. So does the id of a static-token caller (``root``, CN
   plus an e-mail SAN): certificates, tokens and JWT subjects share one id space.
   ``test_a_name_constrained_issuer_cannot_mint_a_granted_id_through_the_common_name``.
2. **An expired client certificate keeps opening connections by TLS session resumption** (wrong
   ALLOW of an identity). grpc's server issues session tickets; a resumed handshake does not
   verify the certificate again, and Verdict reads the (expired) certificate from the session: a
   certificate two seconds past its notAfter was admitted on new connections, while a full
   handshake with it is refused ("certificate has expired"). Measured: still admitted 60 s past
   notAfter (BoringSSL's session lifetime is far longer; a server certificate rotation, which
   makes a new TLS context, ends it). On a connection opened before the expiry, calls are
   admitted until the connection's age (300 s + 30 s grace).
   ``test_an_expired_client_certificate_opens_no_connection_by_resumption``,
   ``test_an_expired_client_certificate_stops_working_on_an_open_connection``.
3. **A CA certificate is accepted as a client certificate and mapped to a caller** (wrong
   identity, low). The client CA's own certificate (BasicConstraints CA:TRUE), presented with its
   key, passes the handshake and becomes the caller named by its CN. A server certificate of the
   same CA (serverAuth only) is refused ("unsupported certificate purpose"), a CA certificate is
   not. ``test_a_ca_certificate_is_no_client_identity``.
4. **A write answered UNAVAILABLE is applied afterwards** (wrong error). With Redis busy for
   2.5 s (a slow script, a fork stall, a network hiccup), PutEntities' script call times out
   (0.5 s socket timeout), two retries on new connections time out too, and the call is answered
   ``UNAVAILABLE`` "entity store unavailable" after ~1.5 s. The script already sent on the first
   connection stays in Redis's input buffer and runs once Redis is free (``MONITOR`` shows that
   one EVALSHA): the write (an un-suspension here) is in force ~1 s after the caller was told
   the store was unavailable, and decisions ALLOW a user whose un-suspension "failed". Nothing
   in the answer says the outcome is unknown (``docs/api.md`` lists UNAVAILABLE as "the entity
   store cannot answer"). DeleteEntities the same: alice, deleted "unavailably", is then
   deleted, and nothing suspends her any more.
   ``test_a_write_whose_outcome_is_unknown_is_not_answered_unavailable``.

Observed, not pinned by a test (not reproducible on demand): a PutEntities of ~1,000-9,000
entities whose deadline fell just before Redis ran its script was DEADLINE_EXCEEDED, a GetEntities
sent right after it still showed the old alice, and the write was in force ~0.3 s later (2 of ~30
attempts, with and without a busy Redis): ``docs/security.md``'s advice to read the entities back
after anything but OK does not tell a writer the write's final outcome.

Held (kept as tests where no earlier test covers them): a server certificate used as a client
certificate; case, trailing dots, a wildcard, punycode and unicode look-alikes (Cyrillic and
fullwidth letters, a zero-width space, one-dot leaders) of a granted host name as DNS SAN or CN; a
client CA rotated out ends resumption of its certificates' sessions; a certificate for one caller
plus a token for another gets the token's grant alone (never the union), and a refused token never
falls back; plaintext to the TLS port and TLS to a plaintext port fail at once with UNAVAILABLE; a
suspension written through one replica stopped ALLOWs on the other within ``cache_grace_seconds``
while the subscriber was killed (``CLIENT KILL TYPE pubsub``), Redis was paused (``CLIENT PAUSE
ALL`` / ``WRITE``, before and after the write), and the subscriber was dropped over and over by a
one-byte pub/sub output-buffer limit under a burst of 1 MB invalidations; the kill also on one
server with two workers (six connections, both workers); deleting and re-creating the parent a
forbid's ``in`` relies on, and the principal itself, decide as Cedar decides at every version on
the other replica; PutEntities, DeleteEntities and GetEntities by a caller granted one store,
naming another store in thirteen spellings, are one PERMISSION_DENIED and change nothing; a write
whose deadline passes while it is parsed and checked is never applied (memory store and Redis).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

import cedarpy
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc.experimental import session_cache

from tests.certs import CertificateAuthority, Issued
from tests.redis_support import REDIS_CLI, RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.authn_support import Pki, target, token_sha256, verdict_app, write_callers
from tests.security.serve_process import fresh_channel
from tests.security.test_attack_edge_identity import REQUEST
from tests.security.test_attack_round10 import (
    ALLOW,
    DENY,
    SUSPENDED_FORBID,
    auth,
    callers_file,
    docs_store,
    served,
    two_tenants,
)
from tests.workers_support import wait_until
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App
from verdict.client import bearer, build_request

ADMIN = "spiffe://lending.test/ns/ops/sa/admin"
ADMIN_HOST = "admin.lending.test"
TENANT_B = "spiffe://tenant-b.test/sa/x"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CALLERS = f"""
[[callers]]
id = "{ADMIN}"
methods = ["decisions", "entity-reads", "entity-writes"]
stores = ["*"]

[[callers]]
id = "{ADMIN_HOST}"
methods = ["decisions", "entity-reads", "entity-writes"]
stores = ["*"]

[[callers]]
id = "{TENANT_B}"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "Verdict Test CA"
methods = ["decisions", "entity-reads"]
stores = ["*"]

[[callers]]
id = "narrow"
methods = ["decisions"]
stores = ["lending"]
token_sha256 = ["{token_sha256("narrow-token")}"]

[[callers]]
id = "root"
methods = ["decisions", "entity-reads", "entity-writes"]
stores = ["*"]
token_sha256 = ["{token_sha256("root-token")}"]
"""
DECISION = REQUEST  # a lending case any caller granted decisions on lending may ask


# --- certificates -------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_key(ca: CertificateAuthority) -> ec.EllipticCurvePrivateKey:
    key: ec.EllipticCurvePrivateKey = ca._key  # the test CA's own key
    return key


class ConstrainedIssuer:
    """An intermediate CA signed by ``root``, name-constrained to ``tenant-b.test`` (URI, DNS):
    what a platform hands a tenant's own issuer (cert-manager, a SPIRE nested server)."""

    def __init__(self, root: CertificateAuthority) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        constraints = x509.NameConstraints(
            permitted_subtrees=[
                x509.UniformResourceIdentifier("tenant-b.test"),
                x509.DNSName("tenant-b.test"),
            ],
            excluded_subtrees=None,
        )
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("tenant-b issuing CA"))
            .issuer_name(root.cert.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(constraints, critical=True)
            .sign(_ca_key(root), hashes.SHA256())
        )

    def leaf(self, common_name: str, names: list[x509.GeneralName]) -> Issued:
        """A client certificate with ``names`` as SANs (none: no SAN extension), and the chain."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        leaf = builder.sign(self.key, hashes.SHA256())
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(
            serialization.Encoding.PEM
        )
        return Issued(chain, _pem_key(key))


# --- an in-process mTLS server and one-call helpers ---------------------------------------------


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[App]:
    """The sample stores over mutual TLS with CALLERS."""
    pki = Pki.create(tmp_path)
    async with verdict_app(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca_file,
        callers_file=write_callers(tmp_path, CALLERS),
    ) as app:
        app.pki = pki  # type: ignore[attr-defined]
        yield app


def credentials(pki: Pki, client: Issued | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        pki.ca.pem, client.key if client else None, client.cert if client else None
    )


async def on_channel(
    channel: grpc.aio.Channel, method: str = "decide", metadata: tuple[Any, ...] = ()
) -> grpc.StatusCode:
    """The status of one call: a decision, or a GetEntities (``read``) on lending."""
    try:
        if method == "decide":
            await pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
                DECISION, metadata=metadata, timeout=5
            )
        else:
            await epb_grpc.EntityServiceStub(channel).GetEntities(
                epb.GetEntitiesRequest(policy_store_id="lending"), metadata=metadata, timeout=5
            )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


async def call(
    app: App,
    creds: grpc.ChannelCredentials,
    method: str = "decide",
    metadata: tuple[Any, ...] = (),
    options: list[tuple[str, Any]] | None = None,
) -> grpc.StatusCode:
    """One call on a channel (and connection) of its own."""
    opts = [("grpc.use_local_subchannel_pool", 1), *(options or [])]
    async with grpc.aio.secure_channel(target(app), creds, options=opts) as channel:
        return await on_channel(channel, method, metadata)


# --- finding 1: the CN behind name constraints --------------------------------------------------


async def test_name_constraints_refuse_a_granted_id_in_the_sans(mtls: App) -> None:
    """Control for finding 1: the constrained issuer's own names work, and the admin's id (or
    host name) in a SAN fails the handshake: the name constraints are enforced."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    issuer = ConstrainedIssuer(pki.ca)
    own = issuer.leaf("x", [x509.UniformResourceIdentifier(TENANT_B)])
    assert await call(mtls, credentials(pki, own)) is OK
    assert await call(mtls, credentials(pki, own), "read") is DENIED
    granted: list[list[x509.GeneralName]] = [
        [x509.UniformResourceIdentifier(ADMIN)],
        [x509.DNSName(ADMIN_HOST)],
    ]
    for names in granted:
        assert await call(mtls, credentials(pki, issuer.leaf("x", names)), "read") is UNAVAILABLE
    # A host-name CN with no SAN at all is checked by BoringSSL against the DNS constraint.
    for host_like in (ADMIN_HOST, "root"):
        bare = issuer.leaf(host_like, [])
        assert await call(mtls, credentials(pki, bare), "read") is UNAVAILABLE


@pytest.mark.parametrize(
    ("common_name", "names"),
    [
        (ADMIN, []),
        (ADMIN, [x509.RFC822Name("ops@tenant-b.test")]),
        (ADMIN_HOST, [x509.RFC822Name("ops@tenant-b.test")]),
        (ADMIN_HOST, [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]),
        ("root", [x509.RFC822Name("ops@tenant-b.test")]),
    ],
    ids=[
        "spiffe-cn-no-san",
        "spiffe-cn-email-san",
        "host-cn-email-san",
        "host-cn-ip-san",
        "token-caller-cn-email-san",
    ],
)
async def test_a_name_constrained_issuer_cannot_mint_a_granted_id_through_the_common_name(
    mtls: App, common_name: str, names: list[x509.GeneralName]
) -> None:
    """An issuer allowed only ``tenant-b.test`` names must not be able to make the admin."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    forged = ConstrainedIssuer(pki.ca).leaf(common_name, names)
    assert await call(mtls, credentials(pki, forged), "read") in {UNAVAILABLE, UNAUTHENTICATED}


# --- finding 2: expiry and session resumption ---------------------------------------------------


def session_cache_lru(capacity: int) -> Any:
    """A client-side TLS session cache (grpc's function is untyped)."""
    make = cast(Callable[[int], Any], session_cache.ssl_session_cache_lru)
    return make(capacity)


def resuming(cache: Any) -> list[tuple[str, Any]]:
    """Channel options sharing one TLS session cache (as a long-running client does)."""
    return [("grpc.ssl_session_cache", cache)]


async def test_an_expired_client_certificate_opens_no_connection_by_resumption(mtls: App) -> None:
    """A certificate used while valid, then past its notAfter: no new connection may be the
    admin, resumed or not."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    short = pki.client("x", uris=(ADMIN,), valid=(-60, 2))
    cache = session_cache_lru(8)
    assert await call(mtls, credentials(pki, short), "read", options=resuming(cache)) is OK
    assert await call(mtls, credentials(pki, short), "read", options=resuming(cache)) is OK
    await asyncio.sleep(3.5)  # past notAfter (whole seconds) with a margin
    assert await call(mtls, credentials(pki, short), "read") is UNAVAILABLE  # a full handshake
    resumed = [
        await call(mtls, credentials(pki, short), "read", options=resuming(cache)) for _ in range(3)
    ]
    assert set(resumed) <= {UNAVAILABLE, UNAUTHENTICATED}


async def test_an_expired_client_certificate_stops_working_on_an_open_connection(
    mtls: App,
) -> None:
    """Calls on a connection opened while the certificate was valid, after it expired."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    short = pki.client("x", uris=(ADMIN,), valid=(-60, 2))
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.secure_channel(
        target(mtls), credentials(pki, short), options=options
    ) as channel:
        assert await on_channel(channel, "read") is OK
        await asyncio.sleep(3.5)
        assert await on_channel(channel, "read") in {UNAUTHENTICATED, UNAVAILABLE}


async def test_a_client_ca_rotated_out_ends_resumption_of_its_sessions(
    mtls: App, tmp_path: Path
) -> None:
    """Held: after the client CA file is replaced by another CA, a certificate of the old CA
    neither handshakes nor resumes a session it held (the new configuration's context has new
    ticket keys)."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    client = pki.client("x", uris=(ADMIN,))
    cache = session_cache_lru(8)
    assert await call(mtls, credentials(pki, client), "read", options=resuming(cache)) is OK
    assert await call(mtls, credentials(pki, client), "read", options=resuming(cache)) is OK
    new_ca = CertificateAuthority("Rotated client CA")
    staged = tmp_path / "ca.crt.new"
    staged.write_bytes(new_ca.pem)
    os.replace(staged, pki.ca_file)
    newcomer = new_ca.issue(ADMIN_HOST, dns=(ADMIN_HOST,), client=True)
    assert await call(mtls, credentials(pki, newcomer), "read") is OK  # the reload happened
    for _ in range(2):
        resumed = await call(mtls, credentials(pki, client), "read", options=resuming(cache))
        assert resumed is UNAVAILABLE
    assert await call(mtls, credentials(pki, client), "read") is UNAVAILABLE


# --- finding 3 and the other certificates -------------------------------------------------------


async def test_a_ca_certificate_is_no_client_identity(mtls: App) -> None:
    """A certificate with BasicConstraints CA:TRUE identifies no caller, whatever its CN."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    ca_as_client = Issued(pki.ca.pem, _pem_key(_ca_key(pki.ca)))
    assert await call(mtls, credentials(pki, ca_as_client), "read") in {
        UNAVAILABLE,
        UNAUTHENTICATED,
    }


async def test_a_server_certificate_is_no_client_certificate(mtls: App) -> None:
    """Held: a certificate of the client CA for serverAuth only (the server's own kind, here for
    the admin's host name) fails the handshake as a client certificate."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    server_kind = pki.ca.issue(ADMIN_HOST, dns=(ADMIN_HOST,), uris=(ADMIN,))
    assert await call(mtls, credentials(pki, server_kind), "read") is UNAVAILABLE


@pytest.mark.parametrize(
    ("common_name", "dns"),
    [
        ("x", ("ADMIN.lending.test",)),
        ("x", ("admin.lending.test.",)),
        ("x", ("admin.lending.test..",)),
        ("x", ("*.lending.test",)),
        ("x", ("xn--dmin-43d.lending.test",)),  # the punycode of a Cyrillic-a "admin"
        ("Admin.lending.test", ()),
        ("admin.lending.test.", ()),
        ("\u0430dmin.lending.test", ()),  # Cyrillic a
        ("\uff41dmin.lending.test", ()),  # fullwidth a
        ("admin.lending.test\u200b", ()),  # zero-width space
        ("admin\u2024lending\u2024test", ()),  # one-dot leaders
    ],
)
async def test_host_names_that_almost_match_a_granted_id_get_nothing(
    mtls: App, common_name: str, dns: tuple[str, ...]
) -> None:
    """Held: case, trailing dots, a wildcard, punycode and unicode look-alikes of the granted
    ``admin.lending.test`` (as a DNS SAN or as the CN) are granted nothing: a DNS SAN names a
    caller no grant covers, a CN names none (finding 1's fix)."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    client = pki.client(common_name, dns=dns)
    refused = DENIED if dns else UNAUTHENTICATED
    assert await call(mtls, credentials(pki, client), "read") is refused
    assert await call(mtls, credentials(pki, client)) is refused


async def test_a_certificate_and_a_token_of_two_callers_get_the_token_grant_alone(
    mtls: App,
) -> None:
    """Held: the admin's certificate with the narrow caller's token is the narrow caller (never
    the union of both grants); a narrow certificate with the root token is root; with a token
    that fails, the admin's certificate is not fallen back to."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    admin = credentials(pki, pki.client("x", uris=(ADMIN,)))
    narrow = credentials(pki, pki.client("x", uris=(TENANT_B,)))
    narrow_token = tuple(bearer("narrow-token"))
    assert await call(mtls, admin, "read") is OK
    assert await call(mtls, admin, "read", narrow_token) is DENIED
    assert await call(mtls, admin, "decide", narrow_token) is OK
    assert await call(mtls, narrow, "read") is DENIED
    assert await call(mtls, narrow, "read", tuple(bearer("root-token"))) is OK
    assert await call(mtls, admin, "read", tuple(bearer("wrong-token"))) is UNAUTHENTICATED


async def test_plaintext_and_tls_mismatches_fail_at_once(mtls: App, tmp_path: Path) -> None:
    """Held: plaintext to the mTLS port and TLS to a plaintext port are UNAVAILABLE well within
    the deadline (no hang until it)."""
    pki: Pki = mtls.pki  # type: ignore[attr-defined]
    started = time.monotonic()
    async with grpc.aio.insecure_channel(target(mtls)) as channel:
        assert await on_channel(channel) is UNAVAILABLE
    async with verdict_app() as plain:
        assert plain.server is not None
        address = f"localhost:{plain.server.port}"
        admin = credentials(pki, pki.client("x", uris=(ADMIN,)))
        async with grpc.aio.secure_channel(address, admin) as channel:
            assert await on_channel(channel) is UNAVAILABLE
    assert time.monotonic() - started < 4  # each call had a 5 s deadline


# --- revocation across replicas while the invalidation channel is attacked ----------------------

GRACE = 1.0
MARGIN = 0.3
DOC_REQUEST = build_request('User::"alice"', 'Action::"view"', 'Doc::"d"')


def alice(suspended: bool) -> dict[str, Any]:
    return {
        "uid": {"type": "User", "id": "alice"},
        "attrs": {"suspended": suspended},
        "parents": [],
    }


def put(port: int, entities: list[dict[str, Any]], timeout: float = 10) -> int:
    with fresh_channel(port) as channel:
        reply = epb_grpc.EntityServiceStub(channel).PutEntities(
            epb.PutEntitiesRequest(entities_json=json.dumps(entities)), timeout=timeout
        )
    return int(reply.version)


def big_writes(port: int, done: threading.Event, tag: str) -> None:
    """Writes of 1,000 entities with 900-byte ids until ``done``: ~1 MB per invalidation."""
    number = 0
    with fresh_channel(port) as channel:
        stub = epb_grpc.EntityServiceStub(channel)
        while not done.is_set():
            entities = [
                {
                    "uid": {"type": "Doc", "id": f"{tag}-{number}-{i}-" + "i" * 900},
                    "attrs": {},
                    "parents": [],
                }
                for i in range(1000)
            ]
            stub.PutEntities(epb.PutEntitiesRequest(entities_json=json.dumps(entities)), timeout=20)
            number += 1


def late_allows(stubs: list[pb_grpc.AuthorizationServiceStub], written: float) -> list[float]:
    """Decide on every channel for GRACE + 2 s after ``written``; the times of ALLOWs later
    than the grace (plus a margin) after the write returned."""
    late: list[float] = []
    while time.monotonic() - written < GRACE + 2.0:
        for stub in stubs:
            try:
                decision = stub.IsAuthorized(DOC_REQUEST, timeout=2).decision
            except grpc.RpcError:
                continue  # fail closed is fine here
            since = time.monotonic() - written
            if decision == ALLOW and since > GRACE + MARGIN:
                late.append(round(since, 3))
        time.sleep(0.01)
    return late


Chaos = Callable[[RedisProcess, int, ExitStack], None]


def kill_subscribers(redis: RedisProcess, _writer: int, _stack: ExitStack) -> None:
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub")


def pause_all(redis: RedisProcess, _writer: int, _stack: ExitStack) -> None:
    redis.cli("CLIENT", "PAUSE", "400", "ALL")


def pause_writes(redis: RedisProcess, _writer: int, _stack: ExitStack) -> None:
    redis.cli("CLIENT", "PAUSE", "400", "WRITE")


def tiny_output_buffers(redis: RedisProcess, writer: int, stack: ExitStack) -> None:
    """Subscribers dropped at every large message, with 1 MB invalidations streaming."""
    redis.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 1 1 0")
    done = threading.Event()
    threads = [threading.Thread(target=big_writes, args=(writer, done, f"t{k}")) for k in range(3)]
    for thread in threads:
        thread.start()

    def finish() -> None:
        done.set()
        for thread in threads:
            thread.join(30)

    stack.callback(finish)
    time.sleep(0.3)


def pause_all_long(redis: RedisProcess, _writer: int, _stack: ExitStack) -> None:
    redis.cli("CLIENT", "PAUSE", "2000", "ALL")


CHAOS: dict[str, tuple[Chaos | None, Chaos | None]] = {
    "client-kill-pubsub": (kill_subscribers, None),
    "client-pause-all": (pause_all, None),
    "client-pause-write": (pause_writes, None),
    "client-pause-all-after": (None, pause_all_long),
    "tiny-pubsub-buffers": (tiny_output_buffers, None),
}


@pytest.mark.parametrize("chaos", list(CHAOS))
def test_a_suspension_through_one_replica_holds_on_the_other_within_the_grace(
    tmp_path: Path, redis: RedisProcess, chaos: str
) -> None:
    """Held: two replicas on one Redis, no min_entity_version; B's cache warm with alice ALLOWed;
    the chaos; alice suspended through A: no ALLOW on B later than the grace after the write."""
    before, after = CHAOS[chaos]
    stores = docs_store(tmp_path, SUSPENDED_FORBID)
    (stores / "docs" / "entities.json").unlink()  # an API-populated store
    env = {"VERDICT_CACHE_GRACE_SECONDS": str(GRACE)}
    with (
        served(stores, "--redis-url", redis.url, env=env) as (_, writer, _log_a),
        served(stores, "--redis-url", redis.url, env=env) as (_, reader, log_b),
        ExitStack() as stack,
    ):
        put(writer, [alice(False)])
        channel = stack.enter_context(fresh_channel(reader))
        stub = pb_grpc.AuthorizationServiceStub(channel)
        assert wait_until(partial(allowed, stub), 10)
        if before is not None:
            before(redis, writer, stack)
        put(writer, [alice(True)])
        written = time.monotonic()
        if after is not None:
            after(redis, writer, stack)
        assert late_allows([stub], written) == []
        if chaos == "tiny-pubsub-buffers":  # the attack did cut the subscriber
            assert log_b.read_text(errors="replace").count('"invalidation_lost"') >= 1


def test_a_suspension_holds_across_two_workers_whose_subscribers_are_killed(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Held: one server with two workers, six connections (both workers), pub/sub clients
    killed right before the suspension and again right after it."""
    stores = docs_store(tmp_path, SUSPENDED_FORBID)
    (stores / "docs" / "entities.json").unlink()
    env = {"VERDICT_CACHE_GRACE_SECONDS": str(GRACE)}
    with (
        served(stores, "--redis-url", redis.url, workers=2, env=env) as (_, port, _log),
        ExitStack() as stack,
    ):
        put(port, [alice(False)])
        stubs = [
            pb_grpc.AuthorizationServiceStub(stack.enter_context(fresh_channel(port)))
            for _ in range(6)
        ]
        for stub in stubs:
            assert wait_until(partial(allowed, stub), 10)
        redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        put(port, [alice(True)])
        written = time.monotonic()
        redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        assert late_allows(stubs, written) == []


def allowed(stub: pb_grpc.AuthorizationServiceStub) -> bool:
    return bool(stub.IsAuthorized(DOC_REQUEST, timeout=5).decision == ALLOW)


# --- deletes and re-creations under forbids, against Cedar --------------------------------------

GROUP_FORBID = (
    '@id("forbid-blocked")\nforbid (principal in Group::"blocked", action, resource);\n'
    '@id("forbid-flagged-team")\nforbid (principal, action, resource)\n'
    "when { principal has team && principal.team has flagged && principal.team.flagged };\n"
)


def uid_json(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def cedar_decision(policies: str, stored: dict[tuple[str, str], dict[str, Any]]) -> int:
    """Cedar's answer for alice viewing Doc::"d" over every stored entity (DENY if a policy
    errored and the permit won only because of it: none can here)."""
    answer = cedarpy.is_authorized(
        {
            "principal": 'User::"alice"',
            "action": 'Action::"view"',
            "resource": 'Doc::"d"',
            "context": {},
        },
        policies,
        list(stored.values()),
    )
    return ALLOW if answer.decision == cedarpy.Decision.Allow else DENY


def test_deleting_and_recreating_what_a_forbid_relies_on_decides_as_cedar(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Held: through replica A, the team alice belongs to is deleted, re-created with the
    blocked group as parent, re-created flagged, and alice herself deleted and re-created with
    the same uid; replica B, asked with each write's version and again after the grace without
    one, decides as Cedar does over the stored entities at that point."""
    stores = docs_store(tmp_path, GROUP_FORBID)
    (stores / "docs" / "entities.json").unlink()
    policies = (stores / "docs" / "docs.cedar").read_text()
    env = {"VERDICT_CACHE_GRACE_SECONDS": str(GRACE)}
    stored: dict[tuple[str, str], dict[str, Any]] = {}

    def team(flagged: bool, *parents: str) -> dict[str, Any]:
        return {
            "uid": uid_json("Team", "t"),
            "attrs": {"flagged": flagged},
            "parents": [uid_json("Group", p) for p in parents],
        }

    member = {
        "uid": uid_json("User", "alice"),
        "attrs": {"team": {"__entity": uid_json("Team", "t")}},
        "parents": [uid_json("Team", "t")],
    }
    steps: list[tuple[str, Any]] = [
        (
            "put",
            [
                team(False, "blocked"),
                member,
                {"uid": uid_json("Group", "blocked"), "attrs": {}, "parents": []},
            ],
        ),
        ("delete", [("Team", "t")]),
        ("put", [team(False)]),
        ("put", [team(False, "blocked")]),
        ("delete", [("Group", "blocked")]),
        ("put", [team(True)]),
        ("delete", [("User", "alice")]),
        ("put", [member]),
        ("put", [team(False)]),
    ]
    with (
        served(stores, "--redis-url", redis.url, env=env) as (_, writer, _log_a),
        served(stores, "--redis-url", redis.url, env=env) as (_, reader, _log_b),
        fresh_channel(reader) as channel,
    ):
        stub = pb_grpc.AuthorizationServiceStub(channel)
        seen: list[tuple[int, int, int]] = []
        for kind, payload in steps:
            if kind == "put":
                version = put(writer, payload)
                stored.update({(e["uid"]["type"], e["uid"]["id"]): e for e in payload})
            else:
                with fresh_channel(writer) as write_channel:
                    reply = epb_grpc.EntityServiceStub(write_channel).DeleteEntities(
                        epb.DeleteEntitiesRequest(
                            uids=[pb.EntityUid(type=t, id=i) for t, i in payload]
                        ),
                        timeout=10,
                    )
                version = int(reply.version)
                for key in payload:
                    stored.pop(key, None)
            expected = cedar_decision(policies, stored)
            request = pb.IsAuthorizedRequest()
            request.CopyFrom(DOC_REQUEST)
            request.min_entity_version = version
            seen.append((expected, stub.IsAuthorized(request, timeout=5).decision, 0))
            time.sleep(GRACE + MARGIN)
            seen.append((expected, stub.IsAuthorized(DOC_REQUEST, timeout=5).decision, 1))
        assert [(e, d) for e, d, _ in seen if e != d] == []
        assert {e for e, _, _ in seen} == {ALLOW, DENY}  # both answers were exercised


# --- finding 4: a write answered UNAVAILABLE, applied afterwards --------------------------------

BUSY_SCRIPT = (
    "local s = redis.call('TIME') "
    "local stop = tonumber(s[1]) * 1000000 + tonumber(s[2]) + tonumber(ARGV[1]) "
    "while true do local n = redis.call('TIME') "
    "if tonumber(n[1]) * 1000000 + tonumber(n[2]) >= stop then break end end return 1"
)


@contextmanager
def redis_busy(redis: RedisProcess, seconds: float) -> Iterator[subprocess.Popen[bytes]]:
    """Redis running one script for ``seconds`` (it answers nobody meanwhile)."""
    busy = subprocess.Popen(
        [REDIS_CLI, "-p", str(redis.port), "EVAL", BUSY_SCRIPT, "0", str(int(seconds * 1e6))],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.1)
        yield busy
    finally:
        busy.wait(30)


def stored_alice(port: int) -> Any:
    """alice as stored (None when she is not)."""
    with fresh_channel(port) as channel:
        reply = epb_grpc.EntityServiceStub(channel).GetEntities(
            epb.GetEntitiesRequest(uids=[pb.EntityUid(type="User", id="alice")]), timeout=10
        )
    found = json.loads(reply.entities_json)
    return found[0] if found else None


def delete_alice(port: int, timeout: float) -> int:
    with fresh_channel(port) as channel:
        reply = epb_grpc.EntityServiceStub(channel).DeleteEntities(
            epb.DeleteEntitiesRequest(uids=[pb.EntityUid(type="User", id="alice")]),
            timeout=timeout,
        )
    return int(reply.version)


def grow_pool(redis: RedisProcess, port: int) -> None:
    """Eight reads at once while Redis is busy for a moment: the server's pool then holds
    connections Redis has accepted (a new one would wait for Redis to accept it)."""
    with redis_busy(redis, 0.4):
        readers = [threading.Thread(target=stored_alice, args=(port,)) for _ in range(8)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(10)


WRITES: dict[str, Callable[[int], int]] = {
    "put-unsuspend": lambda port: put(port, [alice(False)], timeout=20),
    "delete-the-suspended": lambda port: delete_alice(port, timeout=20),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_whose_outcome_is_unknown_is_not_answered_unavailable(
    tmp_path: Path, redis: RedisProcess, write: str
) -> None:
    """alice is suspended; her un-suspension (or her deletion, after which nothing suspends
    her) is sent while Redis is busy for 2.5 s. Redis runs the script it received once it is
    free: the write is applied after the answer. It was answered UNAVAILABLE ("the store
    cannot answer"), which told the writer it had not happened (finding 4). The answer is now
    DEADLINE_EXCEEDED, gRPC's "may have completed", saying so; the store then holds what the
    message warned of."""
    stores = docs_store(tmp_path, SUSPENDED_FORBID)
    (stores / "docs" / "entities.json").unlink()
    with served(stores, "--redis-url", redis.url) as (_, port, _log):
        put(port, [alice(True)])
        grow_pool(redis, port)  # the write then takes a connection Redis has accepted
        with redis_busy(redis, 2.5):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as unknown:
                WRITES[write](port)
            answered = time.monotonic() - started
        assert unknown.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, unknown.value
        assert "the write may still be applied" in (unknown.value.details() or "")
        assert answered < 2.3  # answered while Redis was still busy
        stored = wait_until(lambda: stored_alice(port) != alice(True), 10)
        assert stored, "the write was never applied (then the answer could have said so)"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_write_whose_deadline_passes_while_it_is_checked_is_never_applied(
    tmp_path: Path, redis: RedisProcess, backend: str
) -> None:
    """Held: an un-suspension riding in a 9,000-entity write whose deadline (50 ms, 150 ms)
    passes while it is parsed and checked is DEADLINE_EXCEEDED, and alice is still suspended
    right after and a second later (the work stops at its next turn; nothing is sent)."""
    stores = docs_store(tmp_path, SUSPENDED_FORBID)
    args: tuple[str, ...] = ()
    if backend == "redis":
        (stores / "docs" / "entities.json").unlink()
        args = ("--redis-url", redis.url)
    documents = [
        {"uid": {"type": "Doc", "id": f"d{i}"}, "attrs": {"s": "x" * 60}, "parents": []}
        for i in range(9000)
    ]
    with served(stores, *args) as (_, port, _log):
        put(port, [alice(True)])
        for deadline in (0.05, 0.15):
            with pytest.raises(grpc.RpcError) as late:
                put(port, [alice(False), *documents], timeout=deadline)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert stored_alice(port) == alice(True)
            time.sleep(1.0)
            assert stored_alice(port) == alice(True)


# --- entity calls across stores by a caller granted one store -----------------------------------

SPELLINGS = [
    "lending",
    "Lending",
    "LENDING",
    "lending ",
    " lending",
    "lending\t",
    "ｌｅｎｄｉｎｇ",
    "lending/",
    "../lending",
    "*",
    "acme,lending",
    "lending\x00",
    "lending\u200b",
]


def test_entity_calls_naming_another_store_are_refused_alike_and_change_nothing(
    tmp_path: Path,
) -> None:
    """Held: a caller granted reads and writes on acme alone names lending (and spellings of
    it, and the default store through an empty id) in PutEntities, DeleteEntities and
    GetEntities: one PERMISSION_DENIED "permission denied" for each, and lending's entities are
    the same afterwards (read by root)."""
    stores = two_tenants(tmp_path)
    grants = {
        "acme-rw": ('["entity-reads", "entity-writes"]', '["acme"]'),
        "root": ('["decisions", "entity-reads", "entity-writes"]', '["*"]'),
    }
    callers = callers_file(tmp_path, grants)
    victim = pb.EntityUid(type="Borrower", id="alice")
    with (
        served(stores, "--callers-file", str(callers), "--default-store", "lending") as (
            _,
            port,
            _log,
        ),
        fresh_channel(port) as channel,
    ):
        stub = epb_grpc.EntityServiceStub(channel)
        before = stub.GetEntities(
            epb.GetEntitiesRequest(policy_store_id="lending", uids=[victim]),
            metadata=auth("root"),
            timeout=5,
        )
        assert before.entities_json != "[]"
        replacement = json.dumps(
            [{"uid": {"type": "Borrower", "id": "alice"}, "attrs": {}, "parents": []}]
        )
        outcomes: set[tuple[str, grpc.StatusCode, str]] = set()
        as_acme: dict[str, Any] = {"metadata": auth("acme-rw"), "timeout": 5}
        for store in [*SPELLINGS, ""]:
            put_request = epb.PutEntitiesRequest(policy_store_id=store, entities_json=replacement)
            delete_request = epb.DeleteEntitiesRequest(policy_store_id=store, uids=[victim])
            get_request = epb.GetEntitiesRequest(policy_store_id=store, uids=[victim])
            calls: list[tuple[str, Callable[[], object]]] = [
                ("put", partial(stub.PutEntities, put_request, **as_acme)),
                ("delete", partial(stub.DeleteEntities, delete_request, **as_acme)),
                ("get", partial(stub.GetEntities, get_request, **as_acme)),
            ]
            for name, send in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    send()
                outcomes.add((name, refused.value.code(), refused.value.details() or ""))
        assert {(code, details) for _, code, details in outcomes} == {(DENIED, "permission denied")}
        after = stub.GetEntities(
            epb.GetEntitiesRequest(policy_store_id="lending", uids=[victim]),
            metadata=auth("root"),
            timeout=5,
        )
        assert (after.entities_json, after.version) == (before.entities_json, before.version)
        # The grant itself works: acme is written and read by the same caller.
        acme = json.dumps([{"uid": {"type": "User", "id": "x"}, "attrs": {}, "parents": []}])
        stub.PutEntities(
            epb.PutEntitiesRequest(policy_store_id="acme", entities_json=acme),
            metadata=auth("acme-rw"),
            timeout=5,
        )
