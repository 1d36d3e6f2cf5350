"""A write lost with its master (asynchronous replication) is never vouched for by a later
version: a write under another replication id starts a new epoch (see redis_scripts)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.cases import lending_cases
from tests.integration.redis_apps import UMA_SUSPENDED, UMA_VIEW, redis_app
from tests.processes import free_port
from tests.redis_support import RedisProcess, redis_server, wait_replicated
from tests.security.test_redis_read_your_writes import adam_without_admin
from verdict.errors import ReplacedVersionError, StaleReadError
from verdict.model import Decision, EntityUid
from verdict.store.redis_keys import REPLID_FIELD, StoreKeys

ERIN_VIEWS = next(c for c in lending_cases() if c.principal.id == "erin")


def replica_of(master: RedisProcess, workdir: Path) -> RedisProcess:
    """A started replica of ``master``, in sync with it."""
    master.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")  # sync at once, not in 5 s
    replica = RedisProcess(
        free_port(), workdir, extra=["--replicaof", "127.0.0.1", str(master.port)]
    )
    replica.start()
    wait_replicated(master, replica)
    return replica


async def test_a_revoke_lost_with_its_master_is_not_met_by_a_later_version(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Uma is suspended through the master after its replica was promoted (the write the
    promoted replica never receives). On the promoted replica, the suspension's version is
    refused both before and after a later write of another entity there, never met by the
    older state in which Uma may still view; without a version, the older state answers
    (the loss itself is Redis's, documented)."""
    replica = replica_of(redis, tmp_path / "replica")
    try:
        async with redis_app(redis.url) as a:
            await a.writes.put("lending", json.dumps([adam_without_admin()]))  # lineage recorded
            wait_replicated(redis, replica)
            assert replica.cli("REPLICAOF", "NO", "ONE").strip() == "OK"  # the failover
            suspended, _ = await a.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        by_version = replace(UMA_VIEW.request, min_entity_version=suspended)
        async with redis_app(replica.url, load=False) as b:
            with pytest.raises(StaleReadError):
                await b.authorizer.authorize(by_version)
            assert (await b.authorizer.authorize(UMA_VIEW.request)).decision is Decision.ALLOW
            later, _ = await b.writes.put("lending", json.dumps([adam_without_admin()]))
            assert later > suspended
            with pytest.raises(ReplacedVersionError):
                await b.authorizer.authorize(by_version)
            # A version of the new epoch is met as usual.
            fresh = replace(ERIN_VIEWS.request, min_entity_version=later)
            assert (await b.authorizer.authorize(fresh)).decision.value == ERIN_VIEWS.expect
    finally:
        replica.stop()


async def test_writes_on_one_master_keep_their_epoch(redis: RedisProcess) -> None:
    """No failover, no new epoch: successive writes keep the store's epoch, record the master's
    replication id once, and an earlier write's version is still met."""
    async with redis_app(redis.url) as app:
        first, _ = await app.writes.put("lending", json.dumps([adam_without_admin()]))
        epoch = int(redis.cli("GET", StoreKeys.of("lending").marker).strip())
        second, _ = await app.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        assert second > first
        assert int(redis.cli("GET", StoreKeys.of("lending").marker).strip()) == epoch
        replid = redis.cli("HGET", StoreKeys.of("lending").refs, REPLID_FIELD).strip()
        assert replid
        assert f"master_replid:{replid}" in redis.cli("INFO", "replication")
        by_first = replace(UMA_VIEW.request, min_entity_version=first)
        assert (await app.authorizer.authorize(by_first)).decision is Decision.DENY


async def test_a_store_written_under_a_foreign_replication_id_starts_a_new_epoch(
    tmp_path: Path,
) -> None:
    """A store whose refs hash carries a replication id no master has (a restore from another
    cluster's dump, say) gets a new epoch at its next write, never an error."""
    with redis_server(tmp_path / "redis") as redis:
        async with redis_app(redis.url) as app:
            keys = StoreKeys.of("lending")
            redis.cli("HSET", keys.refs, REPLID_FIELD, "0" * 40)
            before = int(redis.cli("GET", keys.marker).strip())
            version, _ = await app.writes.put("lending", json.dumps([UMA_SUSPENDED]))
            assert int(redis.cli("GET", keys.marker).strip()) == version > before
            assert (await app.authorizer.authorize(UMA_VIEW.request)).decision is Decision.DENY


async def test_a_delete_on_a_promoted_replica_starts_a_new_epoch_too(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """The same through DeleteEntities: the first delete on the promoted replica starts a new
    epoch, so the lost write's version is refused as replaced, not met."""
    replica = replica_of(redis, tmp_path / "replica")
    try:
        async with redis_app(redis.url) as a:
            await a.writes.put("lending", json.dumps([adam_without_admin()]))
            wait_replicated(redis, replica)
            assert replica.cli("REPLICAOF", "NO", "ONE").strip() == "OK"
            suspended, _ = await a.writes.put("lending", json.dumps([UMA_SUSPENDED]))
        by_version = replace(UMA_VIEW.request, min_entity_version=suspended)
        async with redis_app(replica.url, load=False) as b:
            later, _ = await b.writes.delete("lending", [EntityUid("Employee", "nobody")])
            assert later > suspended
            assert int(replica.cli("GET", StoreKeys.of("lending").marker).strip()) == later
            with pytest.raises(ReplacedVersionError):
                await b.authorizer.authorize(by_version)
    finally:
        replica.stop()


async def test_a_user_without_info_is_warned_about_at_start(redis: RedisProcess) -> None:
    """A Redis user denied INFO keeps no lineage: the store says so once, at start, and still
    answers; a user allowed INFO gets no such warning."""
    redis.cli("ACL", "SETUSER", "noinfo", "on", ">s3cret", "~*", "&*", "+@all", "-info")
    without = f"redis://noinfo:s3cret@127.0.0.1:{redis.port}/0"
    try:
        with capture_logs() as logs:
            async with redis_app(without) as app:
                answer = await app.authorizer.authorize(ERIN_VIEWS.request)
        warned = [e for e in logs if e["event"] == "redis_lineage_off"]
        assert len(warned) == 1
        assert warned[0]["log_level"] == "warning"
        assert "+info" in warned[0]["detail"]
        assert "s3cret" not in str(warned[0])
        assert answer.decision.value == ERIN_VIEWS.expect
        with capture_logs() as logs:
            async with redis_app(redis.url):
                pass
        assert not [e for e in logs if e["event"] == "redis_lineage_off"]
    finally:
        redis.cli("ACL", "DELUSER", "noinfo")
