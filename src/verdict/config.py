"""The one Settings object: every knob, read once from flags and VERDICT_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from verdict.redis_urls import redis_url_problem

LOG_LEVELS = ("debug", "info", "warning", "error")


class Settings(BaseSettings):
    """Server settings; command-line flags override environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="VERDICT_", frozen=True, extra="forbid", str_strip_whitespace=True
    )

    stores: Path = Field(default=Path("policies"), description="folder of policy stores")
    default_store: str | None = Field(default=None, description="store used for an empty id")
    listen: str = Field(default="127.0.0.1:50051", description="HOST:PORT to serve gRPC on")
    max_batch_size: int = Field(default=100, ge=1, le=10_000)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_context_depth: int = Field(default=32, ge=2, le=256)
    max_context_bytes: int = Field(default=1024 * 1024, ge=2, description="UTF-8 of context_json")
    # Bytes of a uid's type and of its id, each (request uids, GetEntities/DeleteEntities uids).
    max_id_bytes: int = Field(default=1024, ge=1)
    # Distinct entity uids one request may name in context_json and entities_json together.
    max_request_references: int = Field(default=1_000, ge=1)
    # JSON values (containers and scalars), counted while parsing, before Cedar sees any.
    # Cedar and Python cost up to ~4 us per value in a context and ~6.5 us in inline entities
    # on the event loop; the limits keep a request at all of them (and at max_slice_entities)
    # within 50 ms (docs/security.md, "JSON values"; benchmarks/bench_json_values.py).
    max_context_values: int = Field(default=1_000, ge=1, description="in one context_json")
    max_request_entity_values: int = Field(
        default=1_500, ge=1, description="in one request's entities_json, all entities together"
    )
    max_batch_values: int = Field(
        default=4_000, ge=1, description="context and entities of a batch's items together"
    )
    # GetEntities reply size (bytes); also never more than max_message_bytes.
    max_get_reply_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Connection limits: an idle or half-open socket holds a descriptor (docs/deployment.md).
    max_connections: int = Field(default=1000, ge=1, description="open client connections")
    max_health_connections: int = Field(
        default=16, ge=1, description="open connections to the plaintext health port"
    )
    handshake_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    # Every connection gets GOAWAY after this long (grpc adds +-10% jitter), and its calls still
    # open this much later are cut: clients reconnect, so pods added by a scale-out get their
    # share, and a call that never sends its request cannot hold its stream for ever.
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    max_connection_age_grace_seconds: float = Field(default=30.0, gt=0)
    # Unary calls of Verdict's services in progress at once; past it RESOURCE_EXHAUSTED at once.
    max_concurrent_calls: int = Field(default=256, ge=1)
    # Calls waiting in grpc core for the event loop (CPU-bound backlog); past half of it core
    # refuses a growing share, past all of it every new call (CANCELLED).
    max_pending_calls: int = Field(default=128, ge=2)
    # Calls one connection may have open at once (HTTP/2 streams); clients queue past it. Bounds
    # what a caller that never reads its replies can hold (docs/deployment.md).
    max_streams_per_connection: int = Field(default=256, ge=1, le=10_000)
    # On SIGTERM health turns NOT_SERVING at once and the listener keeps serving this long, so
    # Kubernetes removes the endpoint before calls are refused; 0 (local runs): stop at once.
    shutdown_drain_seconds: float = Field(default=0.0, ge=0, le=300)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)
    # Server processes sharing the port (SO_REUSEPORT), each with its own event loop; None: one
    # per CPU this process may use (docs/deployment.md "Workers"). 1 serves in this process.
    workers: int | None = Field(default=None, ge=1, le=256)
    # Crashed workers the supervisor restarts within a minute before it gives up: it then stops
    # the other workers and exits 1. 0: the first crash stops them all.
    worker_restarts: int = Field(default=5, ge=0, le=100)
    # The event loop that serves: asyncio's own; "uvloop", or "auto" (uvloop when installed),
    # saves ~6-7% CPU per decision. Not the default yet: its SIGTERM losses were grpc core
    # cancelling queued calls (fixed for both loops: ConcurrencyLimit.close), but the fault
    # suite has not been shown stable on it (one run of three missed the flood's refusals).
    event_loop: str = Field(default="asyncio", pattern="^(auto|uvloop|asyncio)$")
    # Any case, as the logging module's names; the levels Verdict logs at (nothing logs
    # "critical", so it would only hide errors).
    log_level: str = Field(default="info", description="debug, info, warning or error")
    # JSON lines in production; readable console output on a terminal ("auto" picks by stderr).
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    metrics_listen: str | None = Field(default=None, description="HOST:PORT for /metrics")
    # Entity store: in memory (from entities.json) unless a Redis URL is given.
    redis_url: str | None = Field(default=None, description="redis://, rediss:// or unix://")
    redis_cluster: bool = Field(default=False, description="treat redis_url as a cluster node")
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    redis_retries: int = Field(default=2, ge=0, le=10)
    redis_max_connections: int = Field(default=64, ge=1)
    redis_namespace: str = Field(
        default="verdict",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="prefix of every Redis key and channel of this deployment",
    )
    cache_max_entries: int = Field(default=100_000, ge=0)
    cache_max_missing: int = Field(default=10_000, ge=4, description="known-missing uids kept")
    # A revocation is never served from a replica's cache later than this after it committed.
    cache_grace_seconds: float = Field(default=3.0, ge=0)
    invalidation_ping_seconds: float = Field(default=0.5, gt=0)
    # Pre-parsed Cedar entity sets (docs/decisions.md, "Pre-parsed entities"): the memory
    # store parses each store version once, the Redis store each hot cached slice.
    entity_handles: bool = Field(default=True, description="evaluate against parsed entities")
    # A memory store larger than this gets no handle: a build parses all of it after each write.
    entity_handle_max_entities: int = Field(default=200_000, ge=0)
    slice_handle_cache_entries: int = Field(default=4_096, ge=0, description="Redis hot slices")
    slice_handle_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="stored JSON bytes of the cached slices"
    )
    health_interval_seconds: float = Field(default=1.0, gt=0)
    # Entity limits: docs/decisions.md "Entity limits", measured by benchmarks/bench_loop_stall.py.
    max_slice_entities: int = Field(default=1_000, ge=1)
    # Policy index: the policy sets built for request selections that each store keeps (LRU),
    # bounded in sets and in policies summed over them (docs/decisions.md, "Policy index").
    policy_cache_sets: int = Field(default=4_096, ge=0)
    policy_cache_policies: int = Field(default=65_536, ge=0)
    # One evaluation's stored entity JSON, summed over its slice (and over a batch's shared
    # union): bytes, and values counted from the text as '[', '{', ',' and ':' (an upper bound,
    # verdict.store.weight). Cedar's time follows values far more than bytes; 16,000 values of
    # its dearest content cost it ~32 ms (docs/security.md, "Slice weight").
    max_slice_bytes: int = Field(default=1024 * 1024, ge=1024, description="JSON bytes")
    max_slice_values: int = Field(default=16_000, ge=100, description="JSON values")
    max_request_entities: int = Field(default=100, ge=0, description="entities_json items")
    max_write_entities: int = Field(default=10_000, ge=1, description="PutEntities items")
    max_entity_bytes: int = Field(default=64 * 1024, ge=256, description="JSON of one entity")
    max_entity_values: int = Field(
        default=1_000, ge=8, description="JSON values of one written entity"
    )
    max_hierarchy_depth: int = Field(default=100, ge=1, description="longest parent chain")
    max_entity_ancestors: int = Field(default=200, ge=1, description="ancestors of one entity")
    max_hierarchy_pairs: int = Field(
        default=20_000, ge=1, description="entity-ancestor pairs Cedar computes per request"
    )
    # Transport security and callers (docs/security.md "Identity and authorization").
    tls_cert: Path | None = Field(default=None, description="server certificate chain, PEM")
    tls_key: Path | None = Field(default=None, description="server private key, PEM")
    tls_client_ca: Path | None = Field(
        default=None, description="CA bundle for client certificates; set: certificates required"
    )
    health_listen: str | None = Field(
        default=None, description="HOST:PORT for a plaintext grpc.health.v1 port"
    )
    callers_file: Path | None = Field(
        default=None, description="callers.toml: who may call which methods and stores"
    )
    # How often the callers file and its JWKS are checked for changes (reloaded without restart).
    callers_reload_seconds: float = Field(default=2.0, gt=0)
    # Decision audit log: one hash-chained record per decision (docs/audit.md).
    audit_sink: str = Field(default="none", pattern="^(none|file|stdout|redis)$")
    audit_file: Path = Field(default=Path("audit/decisions.jsonl"))
    audit_mode: str = Field(default="deny", pattern="^(block|deny|drop)$")
    audit_queue_size: int = Field(default=10_000, ge=1)
    audit_wait_seconds: float = Field(default=1.0, gt=0)
    audit_file_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    audit_file_max_seconds: float = Field(default=86_400.0, gt=0)
    audit_fsync: bool = Field(default=False)
    audit_redis_url: str | None = Field(default=None, description="default: redis_url")
    audit_stream: str = Field(default="verdict:audit")
    audit_stream_max_length: int = Field(default=0, ge=0)
    audit_key_file: Path | None = Field(
        default=None, description="secret (32+ bytes) that signs each audit record"
    )
    # Hot reload of policy stores: watch the stores folder (debounced), poll as a fallback.
    policy_watch: bool = Field(default=True, description="reload policy stores on file changes")
    policy_reload_debounce_seconds: float = Field(default=0.3, gt=0, le=60)
    policy_poll_seconds: float = Field(default=30.0, gt=0)
    # Sealed stores (policy/seal.py): a store whose files do not match its store.seal is
    # never loaded; with this, neither is a store without one.
    require_seal: bool = Field(
        default=False, description="load only stores sealed by `verdict seal` (store.seal)"
    )

    @field_validator("listen", "health_listen", "metrics_listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        # A listen address without a port is not guessed: grpc would serve "localhost" on 443.
        if value is None or value.startswith("unix:"):
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535 or host.endswith(":"):
            raise ValueError("must be HOST:PORT or :PORT, e.g. 127.0.0.1:50051")
        return value

    @field_validator("stores", mode="before")
    @classmethod
    def _named_stores(cls, value: object) -> object:
        # Path("") is the working folder: an empty VERDICT_STORES served every folder in it
        # (src, docs, tests...) as a store.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a folder of policy stores")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        # Checked here: configure_logging met an unknown name as a KeyError traceback.
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("redis_url", "audit_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Checked here: the Redis client refused another scheme only when it first connected,
        # as a ValueError traceback out of `verdict serve`, and read a database that is not a
        # number as another database.
        if value is None:
            return value
        problem = redis_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        if self.tls_cert is not None and self.callers_file is None:
            raise ValueError("with TLS on, a callers_file must say who may call what")
        return self

    @property
    def tls(self) -> bool:
        """Whether the gRPC port speaks TLS."""
        return self.tls_cert is not None
