"""Per-store health names and tenants: with a callers file, the main port answers
``store/<id>`` only to callers granted the store, and everyone else exactly as for a store that
does not exist; the plaintext health port (for probes inside the cluster) answers every name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import POLICIES
from tests.security.authn_support import (
    Issuer,
    Pki,
    jwt_table,
    target,
    token_sha256,
    verdict_app,
    write_callers,
)
from tests.security.test_attack_health_watch import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PREFACE,
    SETTINGS,
    frame,
    literal,
)
from verdict.app import App
from verdict.client import bearer

LOAN_API = "spiffe://lending.test/ns/loans/loan-api"
CALLERS = f"""
[[callers]]
id = "{LOAN_API}"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "acme-ops"
methods = ["entity-reads"]
stores = ["acme-bank"]
token_sha256 = ["{token_sha256("acme-token")}"]

[[callers]]
id = "root"
methods = ["admin"]
stores = ["*"]
token_sha256 = ["{token_sha256("root-token")}"]
"""
REAL, INVENTED = "store/acme-bank", "store/no-such-bank"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
Metadata = tuple[tuple[str, str], ...]


def two_tenants(folder: Path) -> Path:
    """A stores folder with the lending store and a second tenant's, acme-bank."""
    stores = folder / "stores"
    shutil.copytree(POLICIES / "lending", stores / "lending")
    (stores / "acme-bank").mkdir()
    (stores / "acme-bank" / "p.cedar").write_text("permit(principal, action, resource);\n")
    return stores


async def answer(channel: grpc.aio.Channel, name: str, metadata: Metadata = ()) -> object:
    """What a Check of ``name`` answers: the status name, or the error's code, details and
    trailing metadata (its request id fixed by the caller, so equal answers compare equal)."""
    fixed = (*metadata, ("x-request-id", "same-id"))
    call = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=name), metadata=fixed, timeout=5
    )
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        return (exc.code().name, exc.details(), tuple(exc.trailing_metadata() or ()))
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def not_found() -> object:
    """What a Check of a name the server does not know answers (see ``answer``)."""
    return ("NOT_FOUND", "", (("x-request-id", "same-id"),))


async def first_then_rest(
    channel: grpc.aio.Channel, name: str, metadata: Metadata = ()
) -> tuple[int, asyncio.Task[list[int]]]:
    """A Watch of ``name``: its first status, and a task collecting the rest until it ends."""
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=name), metadata=metadata)
    first = await asyncio.wait_for(call.read(), 5)
    assert isinstance(first, health_pb2.HealthCheckResponse)

    async def rest() -> list[int]:
        statuses = []
        while isinstance(reply := await call.read(), health_pb2.HealthCheckResponse):
            statuses.append(reply.status)
        return statuses  # read() gave EOF: the stream ended

    return first.status, asyncio.create_task(rest())


def raw_frames(port: int, method: str, name: str, seconds: float = 0.5) -> list[bytes]:
    """Every HTTP/2 frame (header and payload) the server sends on the stream of one call of
    ``method`` (Check or Watch) for ``name``, on a fresh connection, within ``seconds``."""
    headers = b"".join(
        literal(key, value)
        for key, value in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/grpc.health.v1.Health/{method}"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-request-id", "same-id"),
        ]
    )
    request = health_pb2.HealthCheckRequest(service=name).SerializeToString()
    message = b"\x00" + struct.pack(">I", len(request)) + request
    call = frame(HEADERS, END_HEADERS, 1, headers) + frame(DATA, END_STREAM, 1, message)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, ACK, 0, b"") + call)
        data, deadline = b"", time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not (chunk := sock.recv(65536)):
                    break
                data += chunk
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if int.from_bytes(data[5:9], "big") & 0x7FFFFFFF == 1:
            frames.append(data[: 9 + length])
        data = data[9 + length :]
    return frames


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` and rename it over (an atomic edit)."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    os.replace(staged, path)


async def until(app: App, reloads: int) -> None:
    """Wait until the callers file was reloaded ``reloads`` times."""
    assert app.edge_rules is not None
    deadline = time.monotonic() + 10
    while app.edge_rules.reloads < reloads:
        assert time.monotonic() < deadline, "the callers file was not reloaded"
        await asyncio.sleep(0.02)


async def test_a_granted_caller_sees_its_store_and_nothing_of_another_tenants(
    tmp_path: Path,
) -> None:
    """Mutual TLS: the lending service's certificate (SPIFFE id granted ``lending``) gets
    SERVING for ``store/lending``, and for ``store/acme-bank`` (another tenant's, served) the
    very answer an invented store gets. A certificate the callers file does not know gets
    that answer for every store; a token caller (the token wins over the certificate, as for
    decisions) granted acme-bank sees acme-bank; ``stores = ["*"]`` sees all. ``""`` answers
    everyone."""
    pki = Pki.create(tmp_path)
    settings = {
        "stores": two_tenants(tmp_path),
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca_file,
        "callers_file": write_callers(tmp_path, CALLERS),
    }
    async with verdict_app(**settings) as app:
        loan_api = pki.credentials(pki.client("loan-api", uris=(LOAN_API,)))
        async with grpc.aio.secure_channel(target(app), loan_api) as channel:
            assert await answer(channel, "store/lending") == "SERVING"
            assert await answer(channel, REAL) == await answer(channel, INVENTED) == not_found()
            assert await answer(channel, "") == "SERVING"
        stranger = pki.credentials(pki.client("stranger"))
        async with grpc.aio.secure_channel(target(app), stranger) as channel:
            for name in ("store/lending", REAL):
                assert await answer(channel, name) == not_found()
            assert await answer(channel, INVENTED) == not_found()
            assert await answer(channel, "") == "SERVING"
            acme = tuple(bearer("acme-token"))
            assert await answer(channel, REAL, acme) == "SERVING"
            assert await answer(channel, "store/lending", acme) == not_found()
            root = tuple(bearer("root-token"))
            assert await answer(channel, REAL, root) == "SERVING"
            assert await answer(channel, "store/lending", root) == "SERVING"
            assert await answer(channel, INVENTED, root) == not_found()


async def test_an_anonymous_caller_gets_the_same_answer_for_real_and_invented_stores(
    tmp_path: Path,
) -> None:
    """No identity (or a token that fails) on the main port: Check of a served store and of an
    invented one are both NOT_FOUND, byte for byte on the wire; a Watch of either is sent
    SERVICE_UNKNOWN alone, through a status change of the real store (which a granted
    caller's Watch sees) until the server ends every Watch. ``""``, the service names and
    ``liveness`` stay SERVING for anyone: probes need them."""
    callers = write_callers(tmp_path, CALLERS)
    async with verdict_app(stores=two_tenants(tmp_path), callers_file=callers) as app:
        assert app.server is not None
        port = app.server.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for metadata in ((), tuple(bearer("no-such-token")), (("authorization", "junk"),)):
                assert await answer(channel, REAL, metadata) == not_found()
                assert await answer(channel, INVENTED, metadata) == not_found()
            for name in ("", "verdict.v1.AuthorizationService", "liveness"):
                assert await answer(channel, name) == "SERVING"
            for method in ("Check", "Watch"):
                real, invented = await asyncio.gather(
                    asyncio.to_thread(raw_frames, port, method, REAL),
                    asyncio.to_thread(raw_frames, port, method, INVENTED),
                )
                assert real == invented, method
                assert real  # an answer was sent at all
            acme = tuple(bearer("acme-token"))
            seen, granted = await first_then_rest(channel, REAL, acme)
            assert seen == SERVING
            watches = [first_then_rest(channel, name) for name in (REAL, INVENTED)]
            (real_first, real_rest), (invented_first, invented_rest) = await asyncio.gather(
                *watches
            )
            assert real_first == invented_first == UNKNOWN
            await app.server.set_health(True, {"lending": True, "acme-bank": False})
            await asyncio.sleep(0.2)
            app.server.health.close()  # every Watch ends once it sent the newest status
            assert await asyncio.wait_for(granted, 5) == [NOT_SERVING]
            assert await asyncio.wait_for(real_rest, 5) == await invented_rest == []


async def test_the_health_port_answers_every_store_to_anyone(tmp_path: Path) -> None:
    """The plaintext health port (``--health-listen``, for the kubelet inside the cluster) is
    where per-store probes belong: with the same callers file it answers ``store/acme-bank``
    to a caller with no identity, on Check and on Watch, while the main port does not."""
    callers = write_callers(tmp_path, CALLERS)
    overrides = {"stores": two_tenants(tmp_path), "callers_file": callers}
    async with verdict_app(**overrides, health_listen="127.0.0.1:0") as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.health_port}") as probe:
            assert await answer(probe, REAL) == "SERVING"
            assert await answer(probe, INVENTED) == ("NOT_FOUND", "", ())  # no request ids here
            status, rest = await first_then_rest(probe, REAL)
            assert status == SERVING
            rest.cancel()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as main:
            assert await answer(main, REAL) == not_found()


async def test_a_callers_reload_changes_what_health_shows(tmp_path: Path) -> None:
    """A grant added to the callers file shows the store at the next Check, and to a Watch
    already open (it is sent SERVING without any status change); removed, the store is
    NOT_FOUND again and the open Watch is sent SERVICE_UNKNOWN: as for decisions, health
    follows the reloaded grants."""
    narrow = CALLERS.replace('stores = ["acme-bank"]', 'stores = ["lending"]')
    callers = write_callers(tmp_path, narrow)
    overrides = {"stores": two_tenants(tmp_path), "callers_reload_seconds": 0.05}
    async with verdict_app(**overrides, callers_file=callers) as app:
        assert app.server is not None
        acme = tuple(bearer("acme-token"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            assert await answer(channel, REAL, acme) == not_found()
            status, rest = await first_then_rest(channel, REAL, acme)
            assert status == UNKNOWN
            replace_file(callers, CALLERS)
            await until(app, 1)
            assert await answer(channel, REAL, acme) == "SERVING"
            replace_file(callers, narrow)
            await until(app, 2)
            assert await answer(channel, REAL, acme) == not_found()
            await asyncio.sleep(0.2)
            app.server.health.close()
            assert await asyncio.wait_for(rest, 5) == [SERVING, UNKNOWN]


async def test_a_watch_tells_an_expired_jwt_nothing_more(tmp_path: Path) -> None:
    """A JWT caller granted acme-bank watches ``store/acme-bank`` and is sent SERVING. Its
    token expires (leeway 0) while the Watch stays open: the next status change is sent as
    SERVICE_UNKNOWN, what an invented store gets, not the store's NOT_SERVING; a Check with
    the expired token is answered NOT_FOUND. Before, the Watch kept the identity it opened
    with until the callers file was next reloaded."""
    issuer = Issuer(tmp_path)
    table = jwt_table(issuer) + "leeway_seconds = 0\n"
    callers = write_callers(
        tmp_path,
        table + '[[callers]]\nid = "acme-ops"\nmethods = ["entity-reads"]\n'
        'stores = ["acme-bank"]\n',
    )
    async with verdict_app(stores=two_tenants(tmp_path), callers_file=callers) as app:
        assert app.server is not None
        expires = int(time.time()) + 2
        token = tuple(bearer(issuer.token("acme-ops", exp=expires)))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            assert await answer(channel, REAL, token) == "SERVING"
            status, rest = await first_then_rest(channel, REAL, token)
            assert status == SERVING
            await asyncio.sleep(max(0.0, expires - time.time()) + 0.5)
            assert await answer(channel, REAL, token) == not_found()
            await app.server.set_health(True, {"lending": True, "acme-bank": False})
            await asyncio.sleep(0.2)
            app.server.health.close()
            assert await asyncio.wait_for(rest, 5) == [UNKNOWN]


async def test_without_a_callers_file_every_store_is_answered_to_anyone(tmp_path: Path) -> None:
    """Single tenant, no caller check: nothing changes, ``store/<id>`` answers everyone."""
    async with verdict_app(stores=two_tenants(tmp_path)) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            assert await answer(channel, REAL) == "SERVING"
            assert await answer(channel, INVENTED) == not_found()
            assert await watched_first(channel, REAL) == SERVING


async def watched_first(channel: grpc.aio.Channel, name: str) -> int:
    """The first status a Watch of ``name`` is sent."""
    status, rest = await first_then_rest(channel, name)
    rest.cancel()
    return status


def healthcheck(port: int, name: str, *flags: str, token_variable: str = "") -> tuple[int, str]:
    """`verdict healthcheck` of ``name`` on the main port: its exit code and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "VERDICT_TOKEN"}
    if token_variable:
        env["VERDICT_TOKEN"] = token_variable
    argv = ["healthcheck", "--server", f"127.0.0.1:{port}", "--service", name, *flags]
    done = subprocess.run(
        [sys.executable, "-m", "verdict", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    return done.returncode, done.stderr


async def test_verdict_healthcheck_shows_a_store_to_the_token_granted_it(tmp_path: Path) -> None:
    """`verdict healthcheck --token` (or VERDICT_TOKEN) checks a tenant's store on the main port
    as the caller granted it; without the token the store is as unknown as an invented one."""
    settings = {"stores": two_tenants(tmp_path), "callers_file": write_callers(tmp_path, CALLERS)}
    async with verdict_app(**settings) as app:
        assert app.server is not None
        port = app.server.port
        granted = await asyncio.to_thread(healthcheck, port, REAL, "--token", "acme-token")
        assert granted == (0, "")
        from_variable = await asyncio.to_thread(
            healthcheck, port, REAL, token_variable="acme-token"
        )
        assert from_variable == (0, "")
        anonymous = await asyncio.to_thread(healthcheck, port, REAL)
        invented = await asyncio.to_thread(healthcheck, port, INVENTED, "--token", "acme-token")
        other = await asyncio.to_thread(healthcheck, port, "store/lending", "--token", "acme-token")
        for code, err in (anonymous, invented, other):
            assert code == 1
            assert err.endswith(": no such health service name (NOT_FOUND)\n"), err
