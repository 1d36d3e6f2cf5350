"""The composition root: the one place where concrete components are built and wired together."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from verdict.config import Settings
from verdict.engine.authorizer import Authorizer
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.base import EntityReader
from verdict.store.memory import MemoryEntityStore
from verdict.transport.server import VerdictServer, serve_until_signalled, start_server

log = structlog.get_logger(__name__)


@dataclass
class App:
    """Everything a running Verdict process is made of."""

    settings: Settings
    policies: PolicyHolder
    entities: EntityReader
    authorizer: Authorizer


def build_app(settings: Settings) -> App:
    """Load policies and entities; raises PolicyLoadError (fatal at startup) on any problem."""
    snapshot = load_policy_stores(settings.stores, settings.default_store)
    holder = PolicyHolder(snapshot)
    entities = MemoryEntityStore.from_snapshot(snapshot)
    authorizer = Authorizer(holder, entities, max_batch=settings.max_batch_size)
    return App(settings, holder, entities, authorizer)


async def start(app: App) -> VerdictServer:
    """Start serving ``app`` and report SERVING."""
    settings = app.settings
    server = await start_server(
        app.authorizer,
        settings.listen,
        max_message_bytes=settings.max_message_bytes,
        max_context_depth=settings.max_context_depth,
    )
    await server.mark_serving()
    snapshot = app.policies.current
    log.info(
        "server_started",
        listen=settings.listen,
        port=server.port,
        stores={s.store_id: s.version for s in snapshot.stores.values()},
        default_store=snapshot.default_store,
    )
    return server


async def run(app: App) -> None:
    """Serve until SIGTERM/SIGINT, then drain gracefully."""
    server = await start(app)
    await serve_until_signalled(server, app.settings.shutdown_grace_seconds)
