"""The Redis entity store on a real redis-server: same answers, few round trips, safe writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from tests.cases import BASE_CONTEXT, DecisionCase, lending_cases
from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, redis_app
from tests.redis_support import RedisProcess
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.errors import EntityDataError, RequestError, StaleReadError
from verdict.model import AuthorizationRequest, Decision, EntityUid
from verdict.store.base import StoredEntity
from verdict.store.redis_keys import StoreKeys, uid_key
from verdict.store.redis_store import RedisEntityStore
from verdict.telemetry import metrics


@pytest.fixture(params=["memory", "redis"])
async def any_store_app(request: pytest.FixtureRequest, redis: RedisProcess) -> object:
    """The lending app on each entity store in turn."""
    if request.param == "memory":
        yield build_app(Settings(stores=Path(__file__).parents[2] / "policies"))
        return
    async with redis_app(redis.url) as app:
        yield app


@pytest.mark.parametrize("case", lending_cases(), ids=str)
async def test_shared_cases_on_both_stores(any_store_app: App, case: DecisionCase) -> None:
    """The shared lending cases give identical answers on the memory and the Redis store."""
    for _ in range(2):  # cold, then from the local cache
        result = await any_store_app.authorizer.authorize(case.request)
        assert result.decision.value == case.expect
        assert set(result.determining_policies) == case.determining


def chain_store(tmp_path: Path, depth: int) -> Path:
    """A store whose only permit needs the top of a ``depth``-level group chain."""
    groups = [
        entity("Group", str(i), parents=[("Group", str(i + 1))] if i < depth - 1 else [])
        for i in range(depth)
    ]
    write_store(
        tmp_path,
        "deep",
        {
            "p.cedar": f'@id("top") permit(principal in Group::"{depth - 1}", action, resource);',
            "entities.json": [entity("User", "u", parents=[("Group", "0")]), *groups],
        },
    )
    return tmp_path


async def wait_settled(store: RedisEntityStore, store_id: str, version: int) -> None:
    """Until the listener's pong has settled what a read at ``version`` put in the cache."""
    for _ in range(500):
        if store.cache.version(store_id) >= version:
            return
        await asyncio.sleep(0.002)
    pytest.fail("cache never settled")


async def test_depth_ten_hierarchy_in_one_round_trip(tmp_path: Path, redis: RedisProcess) -> None:
    """A ten-level ancestor chain is fetched in one round trip; a repeat needs none."""
    stores = chain_store(tmp_path, 10)
    app = build_app(Settings(stores=stores, redis_url=redis.url))
    store = app.entities
    assert isinstance(store, RedisEntityStore)
    await store.prepare()
    snapshot = app.policies.current.resolve("deep")
    from verdict.store.entity_file import read_entities_file

    assert snapshot.entities_file is not None
    await store.put("deep", list(read_entities_file(snapshot.entities_file, None).values()))
    assert app.listener is not None
    app.listener.start()
    await asyncio.wait_for(app.listener.subscribed.wait(), 10)
    request = AuthorizationRequest(
        EntityUid("User", "u"), EntityUid("Action", "a"), EntityUid("Doc", "d")
    )
    # Server side: script invocations (commands a script runs are counted under their own names).
    before, trips = redis.commands_processed("evalsha", "eval"), store.round_trips
    first = await app.authorizer.authorize(request)
    after_first, trips_first = redis.commands_processed("evalsha", "eval"), store.round_trips
    await wait_settled(store, "deep", first.entity_version)
    await app.authorizer.authorize(request)
    after_second, trips_second = redis.commands_processed("evalsha", "eval"), store.round_trips
    await app.listener.stop()
    await store.close()
    assert first.decision is Decision.ALLOW
    assert first.errors == ()
    assert (after_first - before, trips_first - trips) == (1, 1)
    assert (after_second - after_first, trips_second - trips_first) == (0, 0)


async def test_schema_invalid_write_changes_nothing(redis: RedisProcess) -> None:
    """A write with one bad entity is rejected naming it and its attribute; Redis is unchanged."""
    async with redis_app(redis.url) as app:
        keys = StoreKeys.of("lending")
        before = [redis.cli("HGETALL", keys.entities), redis.cli("GET", keys.version)]
        good = entity("Partner", "new-bank", {"name": "New", "kind": "bank", "active": True})
        bad = entity("Partner", "bad-bank", {"name": "Bad", "kind": "bank", "active": "yes"})
        with pytest.raises(RequestError) as info:
            await app.writes.put("lending", json.dumps([good, bad]))
        assert info.value.field == "entities_json[1]"
        assert "attribute `active` has a value of the wrong type" in info.value.problem
        assert "yes" not in str(info.value)
        unknown = entity("Partner", "x", {"name": "X", "kind": "bank", "active": True, "z": 1})
        with pytest.raises(RequestError, match="attribute `z` is not declared"):
            await app.writes.put("lending", json.dumps([unknown]))
        with pytest.raises(RequestError) as alien:
            await app.writes.put("lending", json.dumps([entity("Alien", "x")]))
        assert alien.value.problem == 'Alien::"x": entity type Alien is not declared in the schema'
        with pytest.raises(RequestError) as typo:  # a typo gets the declared type it missed
            await app.writes.put("lending", json.dumps([entity("Employe", "x")]))
        assert typo.value.problem == (
            'Employe::"x": entity type Employe is not declared in the schema; '
            "did you mean Employee?"
        )
        after = [redis.cli("HGETALL", keys.entities), redis.cli("GET", keys.version)]
        assert after == before


async def test_parent_cycles_are_rejected(tmp_path: Path, redis: RedisProcess) -> None:
    """A write whose parents lead back to itself, directly or via stored entities, is refused."""
    write_store(tmp_path, "g", {"p.cedar": "permit(principal, action, resource);"})
    app = build_app(Settings(stores=tmp_path, redis_url=redis.url))
    await app.writes.put(
        "g",
        json.dumps(
            [entity("G", "a", parents=[("G", "b")]), entity("G", "b", parents=[("G", "c")])]
        ),
    )
    with pytest.raises(RequestError, match="cycle") as info:
        await app.writes.put("g", json.dumps([entity("G", "c", parents=[("G", "a")])]))
    assert info.value.field == "entities_json[0]"
    with pytest.raises(RequestError, match="cycle"):
        await app.writes.put("g", json.dumps([entity("G", "x", parents=[("G", "x")])]))
    found, _ = await app.writes.get("g", [EntityUid("G", "c"), EntityUid("G", "x")])
    assert found == {}
    await app.entities.close()


def corrupt_count() -> float:
    """verdict_entity_corrupt_total summed over reasons."""
    return sum(
        sample.value
        for metric in metrics.CORRUPT_ENTITIES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize(
    "value",
    [
        "{not json loan-9 amount 7",
        '{"v": 1, "e": {"secret": "loan-9 amount 7"}}',
        '{"v": 1, "e": {"uid": {"type": "Employee", "id": "x"}}}',
        # Readable, but failing the schema: caught when Cedar parses the slice.
        '{"v": 1, "e": {"uid": {"type": "Employee", "id": "uma"}, "attrs": {"suspended": "yes"},'
        ' "parents": []}}',
    ],
)
async def test_corrupt_values_fail_only_their_decisions(redis: RedisProcess, value: str) -> None:
    """Unreadable data fails that decision closed, is counted and logged without its content;
    other decisions go on."""
    async with redis_app(redis.url) as app:
        keys = StoreKeys.of("lending")
        field = uid_key(EntityUid("Employee", "uma"))
        redis.cli("HSET", keys.entities, field, value)
        redis.cli("PUBLISH", keys.channel, "999\n" + field)  # what a real write announces
        counted = corrupt_count()
        cases = lending_cases()
        uma = next(c for c in cases if c.principal.id == "uma")
        alice = next(c for c in cases if c.principal.id == "alice")
        with capture_logs() as logs:
            for _ in range(100):  # the invalidation is asynchronous; wait for it to land
                try:
                    await app.authorizer.authorize(uma.request)
                except EntityDataError:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("corrupt entity was never read")
        after = corrupt_count()
        assert after == counted + 1
        assert [entry["event"] for entry in logs] == ["entity_data_corrupt"]
        assert "loan-9" not in json.dumps(logs)
        assert (await app.authorizer.authorize(alice.request)).decision.value == alice.expect


async def test_read_your_writes(redis: RedisProcess) -> None:
    """A decision asking for a written version sees it; a version not yet written fails."""
    async with redis_app(redis.url) as app:
        case = UMA_VIEW
        assert (await app.authorizer.authorize(case.request)).allowed  # now cached
        version, _ = await app.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        fresh = AuthorizationRequest(
            case.principal, case.action, case.resource, case.context, min_entity_version=version
        )
        result = await app.authorizer.authorize(fresh)
        assert result.decision is Decision.DENY
        assert result.entity_version >= version
        with pytest.raises(StaleReadError):
            await app.authorizer.authorize(
                AuthorizationRequest(
                    case.principal,
                    case.action,
                    case.resource,
                    case.context,
                    min_entity_version=version + 100,
                )
            )


async def test_entity_service_over_grpc(redis: RedisProcess) -> None:
    """PutEntities, GetEntities and DeleteEntities work over a real port with versions."""
    async with redis_app(redis.url, serve=True) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = epb_grpc.EntityServiceStub(channel)
            odd = 'q"uo\\te\nline'
            put = await stub.PutEntities(
                epb.PutEntitiesRequest(
                    policy_store_id="lending",
                    entities_json=json.dumps(
                        [entity("Partner", odd, {"name": "Odd", "kind": "bank", "active": True})]
                    ),
                )
            )
            assert (put.written, put.version > 1) == (1, True)
            uid = epb.GetEntitiesRequest(policy_store_id="lending")
            uid.uids.add(type="Partner", id=odd)
            uid.uids.add(type="Partner", id="nope")
            got = await stub.GetEntities(uid)
            assert json.loads(got.entities_json)[0]["uid"] == {"type": "Partner", "id": odd}
            assert [m.id for m in got.missing] == ["nope"]
            deleted = await stub.DeleteEntities(
                epb.DeleteEntitiesRequest(policy_store_id="lending", uids=list(uid.uids))
            )
            assert (deleted.deleted, deleted.version > put.version) == (1, True)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PutEntities(
                    epb.PutEntitiesRequest(policy_store_id="lending", entities_json="[{}]")
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith("entities_json[0]")


async def test_context_and_extra_entities_on_redis(redis: RedisProcess) -> None:
    """Request entities supplement Redis data and cannot shadow it."""
    async with redis_app(redis.url) as app:
        fake_dave = entity(
            "Borrower",
            "dave",
            {
                "name": "D",
                "kyc_verified": True,
                "suspended": False,
                "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
            },
        )
        with pytest.raises(RequestError):
            await app.authorizer.authorize(
                AuthorizationRequest(
                    EntityUid("Borrower", "dave"),
                    EntityUid("Action", "view"),
                    EntityUid("Loan", "loan-1008"),
                    BASE_CONTEXT,
                    extra_entities=(fake_dave,),
                )
            )


async def test_unix_socket_url(tmp_path_factory: pytest.TempPathFactory) -> None:
    """unix:// URLs reach a Redis listening on a socket file."""
    from tests.processes import free_port
    from tests.redis_support import RedisProcess

    workdir = tmp_path_factory.mktemp("unix")
    socket_path = workdir / "redis.sock"
    server = RedisProcess(free_port(), workdir, extra=["--unixsocket", str(socket_path)])
    server.start()
    try:
        async with redis_app(f"unix://{socket_path}") as app:
            case = lending_cases()[0]
            assert (await app.authorizer.authorize(case.request)).decision.value == case.expect
    finally:
        server.stop()


async def test_stalled_redis_is_bounded_by_the_callers_deadline(redis: RedisProcess) -> None:
    """A Redis that stops answering yields UNAVAILABLE after bounded retries, or the caller's
    deadline if that comes first; never ALLOW."""
    import os
    import signal

    async with redis_app(
        redis.url, serve=True, cache_max_entries=0, redis_timeout_seconds=0.2
    ) as app:
        assert app.server is not None
        assert redis.process is not None
        from verdict.client import AsyncVerdictClient

        case = next(c for c in lending_cases() if c.expect == "allow")
        target = f"127.0.0.1:{app.server.port}"
        async with (
            AsyncVerdictClient(target, timeout=0.15) as hurried,
            AsyncVerdictClient(target, timeout=10) as patient,
        ):
            ok = await patient.is_authorized(
                case.principal, case.action, case.resource, context=case.context
            )
            assert ok.decision == 1
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                codes = []
                for client in (hurried, patient):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await client.is_authorized(
                            case.principal, case.action, case.resource, context=case.context
                        )
                    codes.append((info.value.code(), info.value.details()))
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            assert codes[0][0] == grpc.StatusCode.DEADLINE_EXCEEDED
            assert codes[1] == (grpc.StatusCode.UNAVAILABLE, "entity store unavailable")


async def test_tls_url(tmp_path_factory: pytest.TempPathFactory) -> None:
    """rediss:// reaches a TLS-only Redis, verifying its certificate against the given CA."""
    from tests.redis_support import tls_redis

    server, ca = tls_redis(tmp_path_factory.mktemp("tls"))
    server.start()
    try:
        url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"
        async with redis_app(url) as app:
            case = lending_cases()[0]
            assert (await app.authorizer.authorize(case.request)).decision.value == case.expect
    finally:
        server.stop()


def test_entities_load_and_export_round_trip(redis: RedisProcess, tmp_path: Path) -> None:
    """`verdict entities load` then `export` gives back exactly the store's entities.json."""
    import subprocess
    import sys

    policies = Path(__file__).parents[2] / "policies"

    def verdict(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verdict", "entities", *args, "--redis-url", redis.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    loaded = verdict("load", "--stores", str(policies), "--store", "lending", "--chunk", "7")
    assert loaded.returncode == 0, loaded.stderr
    out = tmp_path / "export.json"
    exported = verdict("export", "--store", "lending", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    original = json.loads((policies / "lending" / "entities.json").read_text())
    key = lambda e: (e["uid"]["type"], e["uid"]["id"])  # noqa: E731
    assert json.loads(out.read_text()) == sorted(original, key=key)
    # 42 entities staged in chunks of 7, then one switch: one new version, no staging key left.
    keys = StoreKeys.of("lending")
    # The switch's one version is the new epoch's first: the marker holds the same number.
    assert redis.cli("GET", keys.version).strip() == redis.cli("GET", keys.marker).strip()
    assert "staging" not in redis.cli("KEYS", "*")
    broken = verdict("load", "--stores", str(tmp_path / "nowhere"))
    assert broken.returncode == 2
    assert "policy stores folder not found" in broken.stderr


async def test_bulk_load_is_pipelined(redis: RedisProcess) -> None:
    """Sixteen staged chunks travel in two pipelined round trips, then one switch; every entity
    lands."""
    from verdict.store.bulk import load_entities

    async with redis_app(redis.url, load=False) as app:
        store = app.entities
        assert isinstance(store, RedisEntityStore)
        partners = [
            StoredEntity(
                EntityUid("Partner", f"p{i}"),
                entity("Partner", f"p{i}", {"name": "P", "kind": "bank", "active": True}),
                frozenset(),
            )
            for i in range(160)
        ]
        before = store.round_trips
        version = await load_entities(store, "lending", partners, chunk=10, pipeline=8)
        assert store.round_trips - before == 3  # two of staged chunks, one switch
        assert version > 0
        # The 160 partners and the hash's epoch field.
        assert redis.cli("HLEN", StoreKeys.of("lending").entities).strip() == "161"


async def test_metrics_endpoint_reports_cache_and_corruption(redis: RedisProcess) -> None:
    """/metrics (own port) shows cache lookups and a corrupt entity met over gRPC."""
    import urllib.request

    from verdict.client import AsyncVerdictClient

    async with redis_app(redis.url, serve=True, metrics_listen="127.0.0.1:0") as app:
        assert app.server is not None
        assert app.metrics_server is not None
        keys = StoreKeys.of("lending")
        redis.cli("HSET", keys.entities, uid_key(EntityUid("Loan", "loan-1001")), "{broken")
        case = UMA_VIEW
        async with AsyncVerdictClient(f"127.0.0.1:{app.server.port}") as client:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.is_authorized(
                    case.principal, case.action, case.resource, context=case.context
                )
        assert info.value.code() == grpc.StatusCode.INTERNAL
        url = f"http://127.0.0.1:{app.metrics_server.server_port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        assert 'verdict_entity_corrupt_total{reason="bad_value"}' in text
        assert 'verdict_entity_cache_lookups_total{result="miss"}' in text
