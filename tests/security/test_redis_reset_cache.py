"""A replica's cache stops answering for a store within the grace after its data is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.redis_reset_stores import app_on, load_seeded, stores
from tests.security.serve_process import running_server
from verdict.client import VerdictClient

GRACE = 0.5
# Generous: the rule is GRACE (plus one read); a busy CI machine gets ten times that.
BOUND = 10 * GRACE + 2
ATTACKS = {
    "FLUSHALL": [["FLUSHALL"]],
    "marker deleted": [["DEL", "verdict:{seeded}:loaded"]],
    "marker set to garbage": [["SET", "verdict:{seeded}:loaded", "garbage"]],
    "both hashes evicted": [["DEL", "verdict:{seeded}:entities", "verdict:{seeded}:refs"]],
}


def outcome(client: VerdictClient) -> str:
    """Carol's decision on the seeded store through gRPC, or the status code's name."""
    try:
        response = client.is_authorized(
            'User::"carol"', 'Action::"view"', 'Doc::"d"', store="seeded"
        )
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "DENY" if response.decision == 2 else "ALLOW"


async def test_the_cache_stops_answering_within_the_grace_after_data_loss(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """With the health monitor polling only every 30 s, a server that answered carol's DENY
    from its cache turns UNAVAILABLE within the grace after FLUSHALL, a deleted or garbage
    marker, or both hashes evicted; never ALLOW, and DENY again after a reload."""
    root = stores(tmp_path)
    env = {"VERDICT_HEALTH_INTERVAL_SECONDS": "30", "VERDICT_CACHE_GRACE_SECONDS": str(GRACE)}
    async with app_on(tmp_path / "loader", redis.url, cache_max_entries=0) as loader:
        await load_seeded(loader)
        with (
            running_server(root, "--redis-url", redis.url, env=env) as (_, port),
            VerdictClient(f"127.0.0.1:{port}") as client,
        ):
            for name, commands in ATTACKS.items():
                seen = [outcome(client) for _ in range(20)]  # warm: answered from the cache
                assert set(seen) == {"DENY"}, name
                for command in commands:
                    redis.cli(*command)
                started = time.monotonic()
                while (result := outcome(client)) == "DENY":
                    assert time.monotonic() - started < BOUND, f"{name}: cache kept answering"
                    await asyncio.sleep(0.01)
                assert result == "UNAVAILABLE", name
                await load_seeded(loader)
