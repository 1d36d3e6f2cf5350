"""One measured closed-loop run over gRPC, with the CPU each side used (client vs servers)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from benchmarks.hot_path import procs
from benchmarks.loadgen import open_channels, run_load, unary_calls

StubMethod = Callable[[grpc.aio.Channel], Callable[..., Any]]
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    """How long one run lasts: a request count and a time cap, whichever comes first."""

    requests: int
    seconds: float
    warmup_requests: int
    warmup_seconds: float


async def measure(
    target: str,
    method: StubMethod,
    messages: Sequence[Message],
    concurrency: int,
    budget: Budget,
    server_pids: Callable[[], Sequence[int]],
    extra_pids: Callable[[], Sequence[int]] = list,
) -> JsonDict:
    """Closed loop at ``concurrency``: c=1 on one channel, c>1 on one channel (one TCP
    connection) per worker, so a server with several SO_REUSEPORT workers gets all of them.

    Also records the CPU the client process, the server's processes and everything else on
    the machine used during the measured phase, in cores (CPU seconds / wall seconds).
    ``extra_pids`` are other processes of ours (client subprocesses) counted with the client.
    """
    channels = open_channels(target, 1 if concurrency == 1 else concurrency)
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        calls = unary_calls(channels, method, messages, timeout=30.0)
        per_worker = calls * concurrency if len(calls) == 1 else calls
        if budget.warmup_requests:
            await run_load(
                per_worker,
                concurrency=concurrency,
                requests=budget.warmup_requests,
                duration=budget.warmup_seconds,
            )
        servers = list(server_pids())
        me = [os.getpid(), *extra_pids()]
        before = (time.monotonic(), procs.cpu_seconds(me), procs.cpu_seconds(servers))
        busy = procs.machine_busy_seconds()
        result = await run_load(
            per_worker, concurrency=concurrency, requests=budget.requests, duration=budget.seconds
        )
        wall = time.monotonic() - before[0]
        client = procs.cpu_seconds(me) - before[1]
        server = procs.cpu_seconds(servers) - before[2]
        other = max(0.0, procs.machine_busy_seconds() - busy - client - server)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    record = result.as_dict()
    record["first_error"] = short_error(result.first_error)
    for key in ("p50", "p90", "p99", "mean", "max"):
        record[f"{key}_us"] = record.pop(f"{key}_ms") * 1000.0
    record["client_cores"] = client / wall
    record["server_cores"] = server / wall
    record["other_cores"] = other / wall
    done = max(result.requests, 1)
    record["client_cpu_us_per_call"] = client / done * 1e6
    record["server_cpu_us_per_call"] = server / done * 1e6
    return record


_GRPC_ERROR = re.compile(r'status = StatusCode\.(\w+).*?details = "([^"]*)"', re.S)


def short_error(text: str | None) -> str | None:
    """``CODE: details`` from the repr of an AioRpcError (the load generator keeps the repr)."""
    if text is None:
        return None
    match = _GRPC_ERROR.search(text)
    return f"{match.group(1)}: {match.group(2)}" if match else text.splitlines()[0]


# --- a separate client process (for the load generator's ceiling) ---------------------------


def _client_main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.hot_path.load --target T --concurrency C --seconds S``: drive the
    lending IsAuthorized mix at T for S seconds and print the LoadResult as JSON."""
    from benchmarks.hot_path.mixes import is_authorized, lending_messages

    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to start at")
    args = parser.parse_args(argv)

    async def run() -> JsonDict:
        messages = lending_messages()
        channels = open_channels(args.target, args.concurrency)
        try:
            await asyncio.gather(*(channel.channel_ready() for channel in channels))
            calls = unary_calls(channels, is_authorized, messages, timeout=30.0)
            await run_load(calls, concurrency=args.concurrency, requests=200, duration=0.3)
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
            started = procs.cpu_seconds([os.getpid()])
            started_at = time.time()
            result = await run_load(
                calls, concurrency=args.concurrency, requests=None, duration=args.seconds
            )
            record = result.as_dict()
            record["client_cpu_s"] = procs.cpu_seconds([os.getpid()]) - started
            record["started_at"] = started_at
            return record
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))

    print(json.dumps(asyncio.run(run())))
    return 0


if __name__ == "__main__":
    sys.exit(_client_main())
