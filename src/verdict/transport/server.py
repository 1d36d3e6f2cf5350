"""Build and run the grpc.aio server: services, health, reflection, graceful shutdown."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.engine.authorizer import Authorizer
from verdict.engine.entity_writes import EntityWrites
from verdict.policy.reloader import PolicyReloader
from verdict.transport.admin_servicer import AdminServicer
from verdict.transport.authz import EdgeGuard
from verdict.transport.call_context import with_call_context
from verdict.transport.connection_limits import HEALTH_MAX_MESSAGE_BYTES, ConnectionLimits
from verdict.transport.convert import (
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_MAX_REFERENCES,
    MAX_UID_PART_BYTES,
    RequestLimits,
)
from verdict.transport.decisions import DecisionRecorder
from verdict.transport.entity_servicer import DEFAULT_MAX_REPLY_BYTES, MAX_UIDS, EntityServicer
from verdict.transport.health import HealthService
from verdict.transport.health_scope import granted_store_names, store_health_name
from verdict.transport.in_progress import FINAL_GRACE_SECONDS, CallsInProgress
from verdict.transport.overload import ConcurrencyLimit
from verdict.transport.pipeline import Handler, StepsInterceptor, Wrap
from verdict.transport.request_parse import (
    RepeatedLimit,
    parsed_here,
    repeated_limits,
    with_bounded_parse,
)
from verdict.transport.servicer import AuthorizationServicer

log = structlog.get_logger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEFAULT_MAX_CONCURRENT_CALLS = 256
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name
ENTITY_SERVICE_NAME = epb.DESCRIPTOR.services_by_name["EntityService"].full_name
ADMIN_SERVICE_NAME = apb.DESCRIPTOR.services_by_name["AdminService"].full_name

DEFAULT_REQUEST_LIMITS = RequestLimits()


@dataclass(frozen=True)
class EdgeSecurity:
    """Main-port TLS credentials, the caller check that guards it, a plaintext health port."""

    credentials: grpc.ServerCredentials | None = None
    guard: EdgeGuard | None = None
    health_listen: str | None = None


# A grpc.health.v1 name that is SERVING from start to stop, whatever Redis does: for liveness
# probes. "" turns NOT_SERVING in a Redis outage; a liveness probe on it would restart every pod
# (and keep them in CrashLoopBackOff after Redis returns) for an outage a restart cannot fix.
LIVENESS_HEALTH_NAME = "liveness"


class VerdictServer:
    """A started gRPC server bound to a port, with its health service.

    Health names: "" and each gRPC service say whether the process can serve at all;
    ``store/<store id>`` says whether that policy store's entities are available (with a
    callers file, on the main port only to callers granted the store: ``main_port_health``);
    ``liveness`` is SERVING while the process runs its event loop (for liveness probes).
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health_servicer: HealthService,
        services: list[str],
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
        admission: ConcurrencyLimit | None = None,
        calls: CallsInProgress | None = None,
    ) -> None:
        self.server = server
        self.admission = admission
        self.calls = calls
        self.port = port
        self.health = health_servicer
        self.health_server = health_server
        self.health_port = health_port
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

    async def drain(self) -> None:
        """Report NOT_SERVING on every health name from now on (later health updates are
        ignored) while the listener still serves: load balancers stop sending new calls."""
        await self.set_health(False, dict.fromkeys(self._stores, False))
        self._stopping = True

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace`` seconds.

        First the calls queued in grpc core are taken and refused as retryable
        (``ConcurrencyLimit.close``): core's shutdown would cancel them. Health Watch streams
        end once they sent NOT_SERVING: they never end by themselves, and one open Watch made
        every stop wait its whole grace. Then the stop waits for Verdict's calls in progress
        (``CallsInProgress.settle``), not for grpc's: those include calls that never sent their
        request, which nothing of Verdict's sees and which made every stop wait its grace too.
        """
        if not self._stopping:
            await self.drain()
        if self.admission is not None:
            started = time.monotonic()
            refused = await self.admission.close()
            if refused:
                log.info(
                    "shutdown_refused_queued_calls",
                    calls=refused,
                    seconds=round(time.monotonic() - started, 3),
                )
        self.health.close()
        if self.calls is not None:
            await self.calls.settle(grace)
            grace = min(grace, FINAL_GRACE_SECONDS)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def start_server(
    authorizer: Authorizer,
    listen: str,
    *,
    max_message_bytes: int,
    max_context_depth: int,
    entity_writes: EntityWrites | None = None,
    max_request_references: int = DEFAULT_MAX_REFERENCES,
    max_get_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    limits: ConnectionLimits | None = None,
    security: EdgeSecurity | None = None,
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
    reloader: PolicyReloader | None = None,
    recorder: DecisionRecorder | None = None,
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    max_id_bytes: int = MAX_UID_PART_BYTES,
    max_context_values: int = DEFAULT_REQUEST_LIMITS.max_context_values,
    max_request_entity_values: int = DEFAULT_REQUEST_LIMITS.max_entity_values,
    max_batch_values: int = DEFAULT_REQUEST_LIMITS.max_batch_values,
    reuse_port: bool = False,
    worker: int = 0,
) -> VerdictServer:
    """Create, bind and start the server; health stays NOT_SERVING until ``mark_serving``.

    ``reuse_port``: bind with SO_REUSEPORT, so that the worker processes of one
    `verdict serve --workers N` share the port (and the health port); the kernel spreads new
    connections over them. Off, a second server on a port in use fails to bind. ``worker`` is
    this process's index among them, the label of its call counter.
    """
    security = security or EdgeSecurity()
    limited = [SERVICE_NAME, ENTITY_SERVICE_NAME]
    # AdminService is refused once stopping, never limited (see ConcurrencyLimit).
    admission = ConcurrencyLimit(max_concurrent_calls, limited, worker, [ADMIN_SERVICE_NAME])
    calls = CallsInProgress()
    server = grpc.aio.server(
        # The edge steps, each method's handler wrapped once (see StepsInterceptor).
        interceptors=[
            StepsInterceptor(
                edge_steps(
                    security.guard,
                    admission,
                    calls,
                    repeated_limits(authorizer.max_batch, MAX_UIDS),
                )
            )
        ],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *(limits or ConnectionLimits()).grpc_options(),
        ],
    )
    pb_grpc.add_AuthorizationServiceServicer_to_server(
        AuthorizationServicer(
            authorizer,
            RequestLimits(
                max_depth=max_context_depth,
                max_references=max_request_references,
                max_context_values=max_context_values,
                max_entity_values=max_request_entity_values,
                max_batch_values=max_batch_values,
                max_context_bytes=max_context_bytes,
                max_id_bytes=max_id_bytes,
            ),
            recorder,
        ),
        server,
    )
    services = [SERVICE_NAME]
    if entity_writes is not None:
        epb_grpc.add_EntityServiceServicer_to_server(
            EntityServicer(entity_writes, max_get_reply_bytes, max_id_bytes), server
        )
        services.append(ENTITY_SERVICE_NAME)
    if reloader is not None:
        apb_grpc.add_AdminServiceServicer_to_server(AdminServicer(reloader), server)
        services.append(ADMIN_SERVICE_NAME)
    health_servicer = HealthService()
    main_health = main_port_health(health_servicer, security)
    health_pb2_grpc.add_HealthServicer_to_server(main_health, server)
    # The asyncio reflection servicer, named (enable_server_reflection picks it by class).
    names = (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer((*names, reflection.SERVICE_NAME)), server
    )
    if security.credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, security.credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    health_server, health_port = None, None
    if security.health_listen is not None:
        health_limits = (limits or ConnectionLimits()).for_health_port()
        health_server, health_port = _health_only_server(
            health_servicer, security.health_listen, health_limits, reuse_port
        )
    verdict_server = VerdictServer(
        server, port, health_servicer, services, health_server, health_port, admission, calls
    )
    await verdict_server.set_health(False, {})
    await health_servicer.set(LIVENESS_HEALTH_NAME, _SERVING)  # set_health never changes it
    await server.start()
    if health_server is not None:
        await health_server.start()
    return verdict_server


def main_port_health(health: HealthService, security: EdgeSecurity) -> HealthService:
    """Health as the main port serves it: with a callers file, ``store/<id>`` only to callers
    granted that store. The health port (``_health_only_server``) answers every name to anyone:
    it is for probes inside the cluster, never exposed beyond it."""
    if security.guard is None:
        return health
    return health.scoped(granted_store_names(security.guard))


def edge_steps(
    guard: EdgeGuard | None,
    admission: ConcurrencyLimit,
    calls: CallsInProgress | None = None,
    limits: Mapping[str, RepeatedLimit] | None = None,
) -> Wrap:
    """What wraps each main-port method, outermost first: the count of calls a stop waits for,
    the call context (request id, log fields, RPC metrics: refusals by the later steps are
    counted too), the caller check or else the parse (either parses the request: repeated
    fields counted on the wire first, request_parse), admission (calls nobody may make never
    take a concurrency slot)."""
    repeated = limits or {}

    def wrap(handler: Handler, method: str) -> Handler | None:
        bounded = with_bounded_parse(handler, repeated.get(method))
        guarded: Handler | None = admission.wrap(bounded, method)
        if guard is not None and guarded is not None:
            guarded = guard.wrap(guarded, method)
        elif guarded is not None:
            guarded = parsed_here(guarded)
        if guarded is None:
            return None
        in_context = with_call_context(guarded, method)
        return in_context if calls is None else calls.wrap(in_context, method)

    return wrap


def _health_only_server(
    health_servicer: HealthService,
    listen: str,
    limits: ConnectionLimits,
    reuse_port: bool,
) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with grpc.health.v1 alone: Kubernetes gRPC probes do not speak TLS.
    It answers every name (``store/<id>`` too) to anyone: reachable from the node only.

    Bounded like the main port: anyone who reaches it needs no identity, and its stalled
    connections used to hold descriptors without end (grpc's defaults: no connection limit,
    120 s handshake), crowding out the main port's calls. Shared by workers like the main port.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_receive_message_length", HEALTH_MAX_MESSAGE_BYTES),
            *limits.grpc_options(),  # HEALTH_MAX_STREAMS per connection (for_health_port)
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port
