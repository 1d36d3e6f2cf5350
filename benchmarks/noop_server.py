"""A no-op grpc.aio AuthorizationService with Verdict's server options: the transport floor."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from verdict import event_loop
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # Settings.max_message_bytes default
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name


def constant_response() -> pb.IsAuthorizedResponse:
    """A response the size and shape of a real lending ALLOW."""
    return pb.IsAuthorizedResponse(
        decision=pb.DECISION_ALLOW,
        determining_policies=["borrower-view-own-loan"],
        policy_version="sha256:" + "0" * 24,
        policy_store_id="lending",
        entity_version=1,
    )


class NoopAuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    """Answers with prepared responses, reading nothing but the request count of a batch.

    ``spin_us`` > 0 burns that much CPU per IsAuthorized while holding the GIL, as a Cedar
    call does: a calibrated stand-in for a handler's work, to see what the transport adds to it.
    """

    def __init__(self, spin_us: float = 0.0) -> None:
        self._response = constant_response()
        self._spin_ns = int(spin_us * 1000)

    async def IsAuthorized(
        self,
        request: pb.IsAuthorizedRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.IsAuthorizedResponse:
        if self._spin_ns:
            end = time.perf_counter_ns() + self._spin_ns
            while time.perf_counter_ns() < end:
                pass
        return self._response

    async def BatchAuthorize(
        self,
        request: pb.BatchAuthorizeRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.BatchAuthorizeResponse:
        results = [pb.BatchAuthorizeResult(response=self._response) for _ in request.requests]
        return pb.BatchAuthorizeResponse(results=results)


async def start_noop_server(listen: str, spin_us: float = 0.0) -> tuple[grpc.aio.Server, int]:
    """Bind, start and report SERVING; options as verdict.transport.server.start_server."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = NoopAuthorizationServicer(spin_us)
    pb_grpc.add_AuthorizationServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def serve(listen: str, spin_us: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT."""
    server, _ = await start_noop_server(listen, spin_us)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.noop_server --listen 127.0.0.1:PORT``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:50061", help="HOST:PORT (loopback)")
    parser.add_argument("--spin-us", type=float, default=0.0, help="CPU to burn per call (µs)")
    parser.add_argument(
        "--event-loop",
        default=os.environ.get("VERDICT_EVENT_LOOP", "asyncio"),
        choices=event_loop.CHOICES,
        help="the loop Verdict would serve on (same stack as the servers it is the floor of)",
    )
    args = parser.parse_args(argv)
    event_loop.run(serve(args.listen, args.spin_us), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
