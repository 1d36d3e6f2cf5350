"""The composition root: the one place where concrete components are built and wired together."""

from __future__ import annotations

from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import structlog

from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.engine.entity_writes import EntityWrites
from verdict.errors import StoreUnavailableError
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.base import EntityStore
from verdict.store.entity_cache import EntityCache
from verdict.store.invalidation import InvalidationListener
from verdict.store.memory import MemoryEntityStore
from verdict.store.redis_connect import make_client, pubsub_connector
from verdict.store.redis_store import RedisEntityStore
from verdict.telemetry.exposition import start_metrics_server
from verdict.transport.server import (
    ConnectionLimits,
    VerdictServer,
    start_server,
    wait_for_signal,
)

log = structlog.get_logger(__name__)


@dataclass
class App:
    """Everything a running Verdict process is made of."""

    settings: Settings
    policies: PolicyHolder
    entities: EntityStore
    authorizer: Authorizer
    writes: EntityWrites
    listener: InvalidationListener | None = None
    server: VerdictServer | None = field(default=None, init=False)
    metrics_server: WSGIServer | None = field(default=None, init=False)


def build_entity_store(
    settings: Settings,
    policies: PolicyHolder,
) -> tuple[EntityStore, InvalidationListener | None]:
    """The in-memory store, or Redis with its cache and invalidation listener."""
    if settings.redis_url is None:
        return MemoryEntityStore.from_snapshot(policies.current), None
    cache = EntityCache(settings.cache_max_entries, settings.cache_grace_seconds)
    store = RedisEntityStore(
        make_client(settings),
        cache,
        op_timeout=settings.redis_timeout_seconds,
        retries=settings.redis_retries,
        max_slice=settings.max_slice_entities,
    )
    return store, InvalidationListener(pubsub_connector(settings), cache)


def build_app(settings: Settings) -> App:
    """Load policies and entities; raises PolicyLoadError (fatal at startup) on any problem."""
    holder = PolicyHolder(load_policy_stores(settings.stores, settings.default_store))
    entities, listener = build_entity_store(settings, holder)
    authorizer = Authorizer(holder, entities, max_batch=settings.max_batch_size)
    return App(settings, holder, entities, authorizer, EntityWrites(holder, entities), listener)


async def start(app: App) -> VerdictServer:
    """Start background work and the server, then report SERVING."""
    settings = app.settings
    try:
        await app.entities.prepare()
    except StoreUnavailableError:
        # Serve anyway: decisions needing the store fail closed (UNAVAILABLE) until it returns.
        log.warning("entity_store_unavailable_at_start")
    if app.listener is not None:
        app.listener.start()
    if settings.metrics_listen is not None:
        app.metrics_server = start_metrics_server(settings.metrics_listen)
    server = await start_server(
        app.authorizer,
        settings.listen,
        max_message_bytes=settings.max_message_bytes,
        max_context_depth=settings.max_context_depth,
        entity_writes=app.writes,
        max_request_references=settings.max_request_references,
        max_get_reply_bytes=min(settings.max_get_reply_bytes, settings.max_message_bytes),
        limits=ConnectionLimits(
            settings.max_connections,
            settings.handshake_timeout_seconds,
            settings.idle_timeout_seconds,
        ),
    )
    app.server = server
    await server.mark_serving()
    snapshot = app.policies.current
    log.info(
        "server_started",
        listen=settings.listen,
        port=server.port,
        stores={s.store_id: s.version for s in snapshot.stores.values()},
        default_store=snapshot.default_store,
        entity_store="redis" if settings.redis_url else "memory",
    )
    return server


async def stop(app: App, grace: float) -> None:
    """Drain the server, then stop background work and close connections."""
    if app.server is not None:
        await app.server.stop(grace)
    if app.listener is not None:
        await app.listener.stop()
    if app.metrics_server is not None:
        app.metrics_server.shutdown()
        app.metrics_server.server_close()
    await app.entities.close()


async def run(app: App) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight calls within the grace period."""
    await start(app)
    await wait_for_signal()
    grace = app.settings.shutdown_grace_seconds
    log.info("shutdown_started", grace_seconds=grace)
    await stop(app, grace)
    log.info("shutdown_finished")
