"""A client flood from its own process: many concurrent callers, counting status codes.

python -m tests.faults.flood TARGET CONCURRENCY SECONDS  (prints one JSON object)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import grpc

from tests.cases import lending_cases
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.model import EntityUid


async def flood(target: str, concurrency: int, seconds: float) -> dict[str, object]:
    """``concurrency`` closed-loop callers for ``seconds``; each asks about a principal never
    seen before, so every call reads Redis (a cache miss) and stays in progress while it does."""
    case = lending_cases()[0]
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)

        async def caller(number: int) -> None:
            sent = 0
            while time.monotonic() < stop:
                principal = EntityUid("Employee", f"flood-{number}-{sent}")
                sent += 1
                request = build_request(principal, case.action, case.resource, context=case.context)
                started = time.monotonic()
                try:
                    await stub.IsAuthorized(request, timeout=5)
                    codes["OK"] += 1
                    latencies.append(time.monotonic() - started)
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1

        await asyncio.gather(*(caller(n) for n in range(concurrency)))
    latencies.sort()
    worst = latencies[-1] if latencies else None
    return {"codes": dict(codes), "admitted_max_ms": None if worst is None else 1000 * worst}


def main() -> None:
    target, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(flood(target, concurrency, seconds))))


if __name__ == "__main__":
    main()
