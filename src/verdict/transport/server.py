"""Build and run the grpc.aio server: services, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Mapping

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.engine.authorizer import Authorizer
from verdict.engine.entity_writes import EntityWrites
from verdict.transport.entity_servicer import EntityServicer
from verdict.transport.servicer import AuthorizationServicer

log = structlog.get_logger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name
ENTITY_SERVICE_NAME = epb.DESCRIPTOR.services_by_name["EntityService"].full_name


def store_health_name(store_id: str) -> str:
    """The grpc.health.v1 service name that reports whether one policy store can answer."""
    return f"store/{store_id}"


class VerdictServer:
    """A started gRPC server bound to a port, with its health service.

    Health names: "" and each gRPC service say whether the process can serve at all;
    ``store/<store id>`` says whether that policy store's entities are available.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
        services: list[str],
    ) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer
        self._health_names = ["", *services]
        self._stores: dict[str, bool] = {}
        self._stopping = False

    async def mark_serving(self, stores: Iterable[str] = ()) -> None:
        """Report SERVING (and each store's entities available): policies and entities loaded."""
        await self.set_health(True, dict.fromkeys(stores, True))

    async def set_health(self, serving: bool, stores: Mapping[str, bool]) -> None:
        """Report whether the process serves, and which stores' entities are available."""
        if self._stopping:
            return
        for name in self._health_names:
            await self.health.set(name, _SERVING if serving else _NOT_SERVING)
        for store_id in self._stores.keys() - stores.keys():  # a store removed by a reload
            await self.health.set(store_health_name(store_id), _NOT_SERVING)
        self._stores = dict(stores)
        for store_id, available in stores.items():
            status = _SERVING if serving and available else _NOT_SERVING
            await self.health.set(store_health_name(store_id), status)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace`` seconds."""
        await self.set_health(False, dict.fromkeys(self._stores, False))
        self._stopping = True
        await self.server.stop(grace)


async def start_server(
    authorizer: Authorizer,
    listen: str,
    *,
    max_message_bytes: int,
    max_context_depth: int,
    entity_writes: EntityWrites | None = None,
) -> VerdictServer:
    """Create, bind and start the server; health stays NOT_SERVING until ``mark_serving``."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_AuthorizationServiceServicer_to_server(
        AuthorizationServicer(authorizer, max_context_depth), server
    )
    services = [SERVICE_NAME]
    if entity_writes is not None:
        epb_grpc.add_EntityServiceServicer_to_server(EntityServicer(entity_writes), server)
        services.append(ENTITY_SERVICE_NAME)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    verdict_server = VerdictServer(server, port, health_servicer, services)
    await verdict_server.set_health(False, {})
    await server.start()
    return verdict_server


async def wait_for_signal() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
