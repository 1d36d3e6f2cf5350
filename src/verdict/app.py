"""The composition root: the one place where concrete components are built and wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import structlog

from verdict.audit.keys import AuditKey, AuditKeyError, read_audit_key
from verdict.audit.log import AuditLog, AuditMode
from verdict.audit.sinks import FileSink, RedisStreamSink, Sink, StdoutSink
from verdict.config import Settings
from verdict.early_signals import sighup_arrived_early
from verdict.engine.authorizer import Authorizer
from verdict.engine.entity_writes import EntityWrites
from verdict.engine.hierarchy import entity_set_vet
from verdict.engine.limits import EntityLimits, HierarchyLimits
from verdict.errors import (
    ConfigError,
    Diagnostic,
    EntitiesChangedError,
    StoreConnectError,
    StoreUnavailableError,
)
from verdict.event_loop import running_loop_name
from verdict.policy.holder import PolicyHolder
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.reload import START_LOAD_ATTEMPTS, load_settled
from verdict.policy.reloader import OnSwap, PolicyReloader, watch_stores
from verdict.policy.snapshot import PolicySnapshot, StoreSnapshot
from verdict.policy.writers import ignore_lease_breaks
from verdict.store.base import EntityStore, SliceLimits
from verdict.store.entity_cache import EntityCache
from verdict.store.entity_file import DEFAULT_HIERARCHY
from verdict.store.invalidation import InvalidationListener
from verdict.store.memory import EntityFile, MemoryEntityStore
from verdict.store.redis_connect import key_layout, make_client, pubsub_connector
from verdict.store.redis_store import RedisEntityStore
from verdict.store.slice_handles import SliceHandles
from verdict.telemetry.exposition import start_metrics_server
from verdict.transport.authz import EdgeGuard
from verdict.transport.connection_limits import ConnectionLimits
from verdict.transport.decisions import DecisionRecorder
from verdict.transport.edge_rules import ReloadingEdgeRules
from verdict.transport.server import EdgeSecurity, VerdictServer, start_server
from verdict.transport.shutdown_signals import ShutdownSignals
from verdict.transport.tls import ReloadingCredentials, TlsFiles

log = structlog.get_logger(__name__)
WRITES_NEED_REDIS = "entity writes need Redis when serving with more than one worker"


@dataclass
class App:
    """Everything a running Verdict process is made of."""

    settings: Settings
    policies: PolicyHolder
    entities: EntityStore
    authorizer: Authorizer
    writes: EntityWrites
    listener: InvalidationListener | None = None
    security: EdgeSecurity = field(default_factory=EdgeSecurity)
    edge_rules: ReloadingEdgeRules | None = None
    reloader: PolicyReloader | None = None
    audit: AuditLog | None = None
    server: VerdictServer | None = field(default=None, init=False)
    watch_task: asyncio.Task[None] | None = field(default=None, init=False)
    metrics_server: WSGIServer | None = field(default=None, init=False)
    health: HealthMonitor | None = field(default=None, init=False)


class HealthMonitor:
    """Keeps gRPC health true for a Redis store: polls each policy store's load marker.

    "" is SERVING while Redis answers, and for ``grace`` seconds into an outage (the cache may
    still answer); never before Redis has answered once. ``store/<id>`` is SERVING while ""
    is and the store is loaded.
    """

    def __init__(
        self, store: RedisEntityStore, policies: PolicyHolder, grace: float, interval: float
    ) -> None:
        self._store = store
        self._policies = policies
        self._grace = grace
        self._interval = interval
        self._loaded: dict[str, bool] = {}
        self._failing_since: float | None = None
        self._ever_answered = False
        self._task: asyncio.Task[None] | None = None

    async def check(self, server: VerdictServer) -> None:
        """Probe Redis once and report the result to ``server``'s health service."""
        store_ids = sorted(self._policies.current.stores)
        deadline = time.monotonic() + self._interval
        try:
            loaded = await asyncio.gather(*(self._store.ready(s, deadline) for s in store_ids))
        except Exception as exc:  # any failure to answer counts as unavailable
            if not isinstance(exc, StoreUnavailableError):
                log.error("health_check_failed", error_type=type(exc).__name__)
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            serving = self._ever_answered and now - self._failing_since < self._grace
            stores = {s: self._loaded.get(s, False) for s in store_ids}
            await server.set_health(serving, stores)
            return
        self._failing_since, self._ever_answered = None, True
        self._loaded = dict(zip(store_ids, loaded, strict=True))
        await server.set_health(True, self._loaded)

    def start(self, server: VerdictServer) -> None:
        """Probe every ``interval`` seconds until ``stop``."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self._interval)
                await self.check(server)

        self._task = asyncio.create_task(loop(), name="verdict-health")

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def selection_cache(settings: Settings) -> SelectionCacheLimits:
    """How many policy sets of request selections each store's index keeps."""
    return SelectionCacheLimits(settings.policy_cache_sets, settings.policy_cache_policies)


def entity_limits(settings: Settings) -> EntityLimits:
    """The engine's entity limits, from the settings."""
    return EntityLimits(
        max_request_entities=settings.max_request_entities,
        max_write_entities=settings.max_write_entities,
        max_entity_bytes=settings.max_entity_bytes,
        max_entity_values=settings.max_entity_values,
        max_slice_entities=settings.max_slice_entities,
        max_slice_bytes=settings.max_slice_bytes,
        max_slice_values=settings.max_slice_values,
        hierarchy=HierarchyLimits.of(settings),
    )


def slice_limits(settings: Settings) -> SliceLimits:
    """What one evaluation may read from a store, from the settings."""
    return SliceLimits(
        settings.max_slice_entities, settings.max_slice_bytes, settings.max_slice_values
    )


def entity_files(
    snapshot: PolicySnapshot, hierarchy: HierarchyLimits = DEFAULT_HIERARCHY
) -> dict[str, EntityFile]:
    """Each store's entities.json and schema, for the embedded store."""
    return {id_: entity_file(store, hierarchy) for id_, store in snapshot.stores.items()}


def entity_file(store: StoreSnapshot, hierarchy: HierarchyLimits = DEFAULT_HIERARCHY) -> EntityFile:
    """One store's entities.json (if any), the schema and the hierarchy limits it is checked
    against."""
    path = store.entities_file
    shown = f"{store.store_id}/{path.name}" if path is not None else store.store_id
    return EntityFile(
        path, store.schema, shown, hierarchy, store.sealed_entities, store.entities_version
    )


class EmbeddedReload:
    """The memory store's part in a policy reload (policy.reloader.EmbeddedEntities)."""

    def __init__(self, store: MemoryEntityStore, hierarchy: HierarchyLimits) -> None:
        self._store = store
        self._hierarchy = hierarchy

    def read(self, store: StoreSnapshot) -> object:
        """The store's entities.json, checked against its (new) schema; off the loop."""
        return MemoryEntityStore.read_file(entity_file(store, self._hierarchy))

    async def install(self, store: StoreSnapshot, entities: object) -> None:
        """Replace the store's entities whole."""
        assert isinstance(entities, dict)
        await self._store.install(store.store_id, entities, store.schema)

    async def drop(self, store_id: str) -> None:
        """Forget a removed store."""
        await self._store.drop(store_id)


def build_entity_store(
    settings: Settings,
    policies: PolicyHolder,
) -> tuple[EntityStore, InvalidationListener | None]:
    """The in-memory store, or Redis with its cache and invalidation listener."""
    if settings.redis_url is None:
        store = MemoryEntityStore.from_files(
            entity_files(policies.current, entity_limits(settings).hierarchy),
            slice_limits(settings),
            entity_set_vet(entity_limits(settings)) if settings.entity_handles else None,
            settings.entity_handle_max_entities,
        )
        return store, None
    cache = EntityCache(
        settings.cache_max_entries,
        settings.cache_grace_seconds,
        max_missing=settings.cache_max_missing,
        limits=slice_limits(settings),
    )
    layout = key_layout(settings)
    handles = settings.slice_handle_cache_entries if settings.entity_handles else 0
    redis_store = RedisEntityStore(
        make_client(settings),
        cache,
        layout=layout,
        op_timeout=settings.redis_timeout_seconds,
        retries=settings.redis_retries,
        limits=slice_limits(settings),
        slice_handles=SliceHandles(handles, settings.slice_handle_cache_bytes),
    )
    # Pongs must come well within the grace, or the cache would flicker out between them.
    grace = settings.cache_grace_seconds
    ping = min(settings.invalidation_ping_seconds, grace / 3) if grace > 0 else 0.5
    listener = InvalidationListener(pubsub_connector(settings), cache, layout, ping)
    return redis_store, listener


def build_edge_security(
    settings: Settings, policies: PolicyHolder
) -> tuple[EdgeSecurity, ReloadingEdgeRules | None]:
    """TLS credentials and the callers check (with its reloading rules); raises ConfigError
    (fatal at startup)."""
    credentials = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        files = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        credentials = ReloadingCredentials(files).server_credentials()
    if settings.callers_file is None:
        return EdgeSecurity(credentials, None, settings.health_listen), None
    rules = ReloadingEdgeRules(settings.callers_file, settings.callers_reload_seconds)

    def resolve_default(_: str) -> str | None:
        return policies.current.default_store or None

    guard = EdgeGuard(rules, resolve_default)
    return EdgeSecurity(credentials, guard, settings.health_listen), rules


def several_workers(settings: Settings) -> bool:
    """Whether this process is one of several workers sharing the port (set by the supervisor;
    None, as in tests and `verdict check`, is one process)."""
    return (settings.workers or 1) > 1


def load_at_start(
    settings: Settings,
) -> tuple[PolicyHolder, tuple[EntityStore, InvalidationListener | None]]:
    """The policies and the entity store a start serves, read from one state of the files:
    the embedded store's entities.json, read after the policies, must be the file their load
    found, or both are loaded again (START_LOAD_ATTEMPTS in all). An A -> B -> A edit around
    that read was served as B under A's version, for good (attack round 22)."""
    cache, sealed = selection_cache(settings), settings.require_seal
    for attempt in range(1, START_LOAD_ATTEMPTS + 1):
        holder = PolicyHolder(
            load_settled(settings.stores, settings.default_store, cache, require_seal=sealed)
        )
        try:
            return holder, build_entity_store(settings, holder)
        except EntitiesChangedError:
            if attempt == START_LOAD_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def build_app(settings: Settings) -> App:
    """Load policies, entities and the edge security; raises PolicyLoadError or ConfigError
    (fatal at startup) on any problem."""
    # As a reload reads: still files, no writer holding one open (a start while a writer
    # paused mid-file served the prefix, attack round 16).
    holder, (entities, listener) = load_at_start(settings)
    security, edge_rules = build_edge_security(settings, holder)
    limits = entity_limits(settings)
    authorizer = Authorizer(holder, entities, max_batch=settings.max_batch_size, limits=limits)
    # Each worker holds its own in-memory store: a write would reach one of them.
    memory_only = settings.redis_url is None and several_workers(settings)
    writes = EntityWrites(holder, entities, limits, WRITES_NEED_REDIS if memory_only else None)
    embedded = None
    if isinstance(entities, MemoryEntityStore):
        embedded = EmbeddedReload(entities, limits.hierarchy)
    reloader = PolicyReloader(
        settings.stores,
        holder,
        embedded,
        cache=selection_cache(settings),
        require_seal=settings.require_seal,
    )
    audit = build_audit_log(settings)
    return App(
        settings,
        holder,
        entities,
        authorizer,
        writes,
        listener,
        security,
        edge_rules,
        reloader,
        audit,
    )


def build_audit_log(settings: Settings) -> AuditLog | None:
    """The audit log the settings ask for (None: no audit); its writer starts with the server."""
    sink: Sink
    if settings.audit_sink == "none":
        return None
    key = audit_key(settings)
    if settings.audit_sink == "file":
        sink = FileSink(
            settings.audit_file,
            settings.audit_file_max_bytes,
            settings.audit_file_max_seconds,
            settings.audit_fsync,
            key,
        )
    elif settings.audit_sink == "stdout":
        sink = StdoutSink(key)
    else:
        url = settings.audit_redis_url or settings.redis_url
        if url is None:
            raise ConfigError(
                [Diagnostic("audit_redis_url", 0, "the redis audit sink needs a URL")]
            )
        client = make_client(settings.model_copy(update={"redis_url": url}))
        stream, max_length = settings.audit_stream, settings.audit_stream_max_length
        sink = RedisStreamSink(client, stream, max_length, key)
    mode = AuditMode(settings.audit_mode)
    return AuditLog(sink, mode, settings.audit_queue_size, settings.audit_wait_seconds)


def audit_key(settings: Settings) -> AuditKey | None:
    """The audit signing key the settings name (None: records are chained, not signed)."""
    if settings.audit_key_file is None:
        log.warning(
            "audit_unsigned",
            detail="no audit_key_file: the chain shows records altered or removed, not records "
            "appended by someone who can write the log",
        )
        return None
    try:
        return read_audit_key(settings.audit_key_file)
    except AuditKeyError as exc:
        shown = f"audit_key_file {settings.audit_key_file}"
        raise ConfigError([Diagnostic(shown, 0, str(exc))]) from None


def warn_about_security(settings: Settings) -> None:
    """Say once, at start, when the port is open to anyone or tokens travel in plaintext."""
    if settings.callers_file is None:
        log.warning(
            "authorization_disabled",
            detail="no callers file and no TLS: every caller may call every method "
            "(entity writes included); for local development only",
        )
    elif not settings.tls:
        log.warning("plaintext_with_tokens", detail="bearer tokens travel unencrypted")


def settle_heap() -> None:
    """Move everything alive after start-up (modules, policies, the memory store's entities)
    out of the garbage collector's reach. A full collection then scans only what was allocated
    since, so the pause that a large write's garbage triggers stays short (measured in
    benchmarks/bench_loop_stall.py: ~75 ms -> ~20 ms of loop lag during a 10,000-entity write)."""
    gc.collect()
    gc.freeze()


async def start(app: App, worker: int = 0, metrics: str | None = None) -> VerdictServer:
    """Start background work and the server, then report SERVING; ``worker`` is this process's
    index under `verdict serve --workers N`, ``metrics`` where its supervisor serves /metrics
    (this worker's counts summed with the others')."""
    settings = app.settings
    settle_heap()
    warn_about_security(settings)
    try:
        await app.entities.prepare()
    except StoreUnavailableError as exc:
        # Serve anyway: decisions needing the store fail closed (UNAVAILABLE) until it returns.
        # The reason (our own words: authentication failed, timed out...) tells an operator
        # whether waiting will help.
        reason = exc.reason if isinstance(exc, StoreConnectError) else str(exc)
        log.warning("entity_store_unavailable_at_start", reason=reason)
    if app.listener is not None:
        app.listener.start()
    if app.edge_rules is not None:
        app.edge_rules.start()
    if app.audit is not None:
        app.audit.start()
    if settings.metrics_listen is not None:
        app.metrics_server = start_metrics_server(settings.metrics_listen)
    server = await start_server(
        app.authorizer,
        settings.listen,
        max_message_bytes=settings.max_message_bytes,
        max_context_depth=settings.max_context_depth,
        entity_writes=app.writes,
        max_request_references=settings.max_request_references,
        max_context_values=settings.max_context_values,
        max_request_entity_values=settings.max_request_entity_values,
        max_batch_values=settings.max_batch_values,
        max_get_reply_bytes=min(settings.max_get_reply_bytes, settings.max_message_bytes),
        max_concurrent_calls=settings.max_concurrent_calls,
        max_context_bytes=settings.max_context_bytes,
        max_id_bytes=settings.max_id_bytes,
        limits=ConnectionLimits(
            settings.max_connections,
            settings.handshake_timeout_seconds,
            settings.idle_timeout_seconds,
            settings.max_pending_calls,
            settings.max_health_connections,
            settings.max_streams_per_connection,
            settings.max_connection_age_seconds,
            settings.max_connection_age_grace_seconds,
        ),
        security=app.security,
        reloader=app.reloader,
        recorder=DecisionRecorder(app.policies, app.audit),
        reuse_port=several_workers(settings),
        worker=worker,
    )
    app.server = server
    if app.edge_rules is not None:  # a grant added or removed changes open health Watches too
        app.edge_rules.on_swap = server.health.recheck
    if isinstance(app.entities, RedisEntityStore):
        app.health = HealthMonitor(
            app.entities,
            app.policies,
            settings.cache_grace_seconds,
            settings.health_interval_seconds,
        )
        await app.health.check(server)
        app.health.start(server)
    else:
        await server.mark_serving(app.policies.current.stores)
    start_hot_reload(app, server)
    snapshot = app.policies.current
    # A worker serves no /metrics of its own: its counts are summed at the supervisor's.
    served = metrics or metrics_address(settings.metrics_listen, app.metrics_server)
    served_by = None if served is None else "supervisor" if metrics else "server"
    log.info(
        "server_started",
        listen=settings.listen,
        port=server.port,
        tls=settings.tls,
        mutual_tls=settings.tls_client_ca is not None,
        callers_file=str(settings.callers_file) if settings.callers_file else None,
        health_port=server.health_port,
        metrics=served,
        metrics_served_by=served_by,
        stores={s.store_id: s.version for s in snapshot.stores.values()},
        default_store=snapshot.default_store,
        entity_store="redis" if settings.redis_url else "memory",
        event_loop=running_loop_name(),
    )
    return server


def metrics_address(listen: str | None, metrics: WSGIServer | None) -> str | None:
    """Where /metrics is served (``listen`` with its real port), or None when it is off."""
    if listen is None or metrics is None:
        return None
    host = listen.rpartition(":")[0]
    return f"{host}:{metrics.server_port}"


def start_hot_reload(app: App, server: VerdictServer) -> None:
    """Reload policy stores on file changes (unless turned off) and on SIGHUP."""
    reloader, settings = app.reloader, app.settings
    if reloader is None:
        return
    reloader.on_swap = _health_follows(app, server)
    # Reloads ask the kernel whether a store file is open for writing (a read lease, taken
    # and given back): the lease's break notice, SIGIO, would otherwise end the process.
    ignore_lease_breaks()
    if settings.policy_watch:
        app.watch_task = asyncio.get_running_loop().create_task(
            watch_stores(
                reloader, settings.policy_reload_debounce_seconds, settings.policy_poll_seconds
            ),
            name="policy-watch",
        )
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
    if sighup_arrived_early():  # during the start's load, which may have read the files first
        # Logged: an unchanged reload logs nothing, and an operator (or a test) could not
        # tell a SIGHUP kept through the start from one lost.
        log.info("policy_reload_requested", trigger="sighup", arrived="before_serving")
        reloader.request("sighup")


def _health_follows(app: App, server: VerdictServer) -> OnSwap:
    """After a swap, stores that appeared report health and removed ones NOT_SERVING."""

    async def follow(snapshot: PolicySnapshot) -> None:
        if app.health is not None:
            await app.health.check(server)  # Redis: loaded markers decide per store
        else:
            await server.mark_serving(snapshot.stores)

    return follow


async def stop(app: App, grace: float) -> None:
    """Drain the server, then stop background work and close connections."""
    if app.watch_task is not None:
        app.watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app.watch_task
    with contextlib.suppress(NotImplementedError, RuntimeError):
        # Ignored, not removed: removing restores the default action, and a SIGHUP (the
        # supervisor forwards one to every worker) would kill the process mid-grace.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _ignore)
    if app.health is not None:
        await app.health.stop()
    if app.server is not None:
        await app.server.stop(grace)
    if app.listener is not None:
        await app.listener.stop()
    if app.edge_rules is not None:
        await app.edge_rules.stop()
    if app.audit is not None:
        await app.audit.close()  # after the server drained: every answered decision is written
    if app.metrics_server is not None:
        app.metrics_server.shutdown()
        app.metrics_server.server_close()
    await app.entities.close()


def _ignore() -> None:
    """A signal handler that does nothing."""


async def shut_down(app: App, signals: ShutdownSignals) -> None:
    """After the first signal: health NOT_SERVING at once while the listener keeps serving for
    ``shutdown_drain_seconds`` (Kubernetes removes the endpoint meanwhile; another signal cuts
    this short), then in-flight calls get ``shutdown_grace_seconds`` and everything stops."""
    drain = app.settings.shutdown_drain_seconds
    grace = app.settings.shutdown_grace_seconds
    log.info("shutdown_started", drain_seconds=drain, grace_seconds=grace)
    if app.server is not None and drain > 0:
        await app.server.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signals.next(), drain)
        log.info("drain_finished")
    await stop(app, grace)
    log.info("shutdown_finished")


async def run(app: App) -> None:
    """Serve until SIGTERM/SIGINT, then drain and stop (``shut_down``)."""
    signals = ShutdownSignals()
    signals.install()
    await start(app)
    await signals.next()
    await shut_down(app, signals)
