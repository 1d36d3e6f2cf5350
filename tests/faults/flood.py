"""A client flood from its own process: many concurrent callers, counting status codes.

python -m tests.faults.flood TARGET CONCURRENCY SECONDS [misses|hits] [BACKOFF_SECONDS]
(prints one JSON object)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import grpc

from tests.cases import lending_cases
from tests.faults.load import percentile
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.model import EntityUid


async def flood(
    target: str, concurrency: int, seconds: float, kind: str = "misses", backoff: float = 0.0
) -> dict[str, object]:
    """``concurrency`` closed-loop callers for ``seconds``. ``misses``: each asks about a
    principal never seen before, so every call reads Redis (a cache miss) and stays in progress
    while it does. ``hits``: every call is the same cached decision, so calls are CPU-bound and
    queue in grpc core. A refused caller waits ``backoff`` seconds before its next call."""
    case = lending_cases()[0]
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)

        async def caller(number: int) -> None:
            sent = 0
            while time.monotonic() < stop:
                principal = case.principal
                if kind == "misses":
                    principal = EntityUid("Employee", f"flood-{number}-{sent}")
                sent += 1
                request = build_request(principal, case.action, case.resource, context=case.context)
                started = time.monotonic()
                try:
                    await stub.IsAuthorized(request, timeout=5)
                    codes["OK"] += 1
                    latencies.append(1000 * (time.monotonic() - started))
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    await asyncio.sleep(backoff)

        await asyncio.gather(*(caller(n) for n in range(concurrency)))
    return {
        "codes": dict(codes),
        "answered_per_s": round(codes["OK"] / seconds),
        "admitted_p50_ms": percentile(latencies, 50),
        "admitted_p99_ms": percentile(latencies, 99),
        "admitted_max_ms": max(latencies, default=None),
    }


def main() -> None:
    target, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "misses"
    backoff = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    print(json.dumps(asyncio.run(flood(target, concurrency, seconds, kind, backoff))))


if __name__ == "__main__":
    main()
