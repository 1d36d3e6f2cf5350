"""A reusable closed-loop async load generator: C workers, warm-up, per-request latency."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import grpc
from google.protobuf.message import Message

Call = Callable[[int], Awaitable[object]]
"""One request: called with a global request index (use it to pick from a request mix)."""

ChannelMode = Literal["shared", "per-worker"]


@dataclass(frozen=True)
class LoadResult:
    """What one measured run did: counts, wall time and latency percentiles (milliseconds)."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second over the measured phase
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    first_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class _Phase:
    """Shared state of the workers of one phase (a single event loop: no locks needed)."""

    limit: int | None
    deadline_ns: int | None
    next_index: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[int] = field(default_factory=list)

    def take(self) -> int | None:
        """The next request index, or None when the phase is over."""
        if self.limit is not None and self.next_index >= self.limit:
            return None
        if self.deadline_ns is not None and time.perf_counter_ns() >= self.deadline_ns:
            return None
        index = self.next_index
        self.next_index += 1
        return index


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile ``q`` (0..1) of an ascending sequence."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _worker(call: Call, phase: _Phase) -> None:
    while (index := phase.take()) is not None:
        started = time.perf_counter_ns()
        try:
            await call(index)
        except Exception as exc:  # count and go on: one failure must not stop the run
            phase.errors += 1
            if phase.first_error is None:
                phase.first_error = f"{type(exc).__name__}: {exc}"[:300]
            continue
        phase.latencies.append(time.perf_counter_ns() - started)


async def _run_phase(calls: Sequence[Call], phase: _Phase) -> float:
    """Run one worker per call until the phase ends; returns wall seconds."""
    started = time.perf_counter()
    await asyncio.gather(*(_worker(call, phase) for call in calls))
    return time.perf_counter() - started


def _summary(concurrency: int, phase: _Phase, seconds: float) -> LoadResult:
    ordered = sorted(phase.latencies)
    count = len(ordered)
    ms = 1e-6
    return LoadResult(
        concurrency=concurrency,
        requests=count,
        errors=phase.errors,
        seconds=seconds,
        throughput=count / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(ordered, 0.50) * ms,
        p90_ms=percentile(ordered, 0.90) * ms,
        p99_ms=percentile(ordered, 0.99) * ms,
        mean_ms=(sum(ordered) / count) * ms if count else 0.0,
        max_ms=(ordered[-1] * ms) if count else 0.0,
        first_error=phase.first_error,
    )


async def run_load(
    calls: Call | Sequence[Call],
    *,
    concurrency: int = 1,
    requests: int | None = None,
    duration: float | None = None,
    warmup: int = 0,
) -> LoadResult:
    """Closed loop: ``concurrency`` workers each send the next request as soon as theirs returns.

    ``calls`` is one callable shared by all workers, or one per worker. The run stops after
    ``requests`` measured requests or ``duration`` seconds, whichever is given (both: first hit).
    ``warmup`` requests are sent first at the same concurrency and not recorded.
    """
    if requests is None and duration is None:
        raise ValueError("give requests, duration or both")
    per_worker = [calls] * concurrency if callable(calls) else list(calls)
    if len(per_worker) != concurrency or concurrency < 1:
        raise ValueError("need exactly one call per worker and at least one worker")
    if warmup:
        await _run_phase(per_worker, _Phase(limit=warmup, deadline_ns=None))
    deadline = None if duration is None else time.perf_counter_ns() + int(duration * 1e9)
    phase = _Phase(limit=requests, deadline_ns=deadline)
    seconds = await _run_phase(per_worker, phase)
    return _summary(concurrency, phase, seconds)


def open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` insecure channels; each gets its own TCP connection (local subchannel pool)."""
    if count == 1:
        return [grpc.aio.insecure_channel(target)]
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


StubMethod = Callable[[grpc.aio.Channel], Callable[..., Awaitable[Any]]]
"""From a channel to a bound stub method, e.g. ``lambda ch: Stub(ch).IsAuthorized``."""


def unary_calls(
    channels: Sequence[grpc.aio.Channel],
    method: StubMethod,
    messages: Sequence[Message],
    timeout: float,
) -> list[Call]:
    """One Call per channel: the stub method, cycling through ``messages``."""

    def make(channel: grpc.aio.Channel) -> Call:
        rpc = method(channel)

        async def call(index: int) -> object:
            return await rpc(messages[index % len(messages)], timeout=timeout)

        return call

    return [make(channel) for channel in channels]


async def run_grpc_load(
    target: str,
    method: StubMethod,
    messages: Sequence[Message],
    *,
    concurrency: int = 1,
    channels: ChannelMode = "shared",
    requests: int | None = None,
    duration: float | None = None,
    warmup: int = 0,
    rpc_timeout: float = 5.0,
) -> LoadResult:
    """``run_load`` over unary gRPC calls to ``target``, cycling through ``messages``.

    ``shared``: one channel (one HTTP/2 connection) for all workers, as a typical service
    client holds it. ``per-worker``: one channel and connection per worker.
    """
    opened = open_channels(target, 1 if channels == "shared" else concurrency)
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in opened))
        calls = unary_calls(opened, method, messages, rpc_timeout)
        per_worker = calls * concurrency if channels == "shared" else calls
        return await run_load(
            per_worker,
            concurrency=concurrency,
            requests=requests,
            duration=duration,
            warmup=warmup,
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))
