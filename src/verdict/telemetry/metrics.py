"""Prometheus metric objects (the only module-level singletons); names are verdict_<noun>_<unit>."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


@functools.lru_cache(maxsize=1024)
def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, looked up once for the hot path (prometheus_client's lookup
    costs microseconds a call). Only for label values from a small set: store ids, decisions,
    deny kinds; never for a metric whose children are removed."""
    return metric.labels(*values)


CACHE_LOOKUPS = Counter(
    "verdict_entity_cache_lookups_total", "Entity slice lookups in the local cache", ["result"]
)
STORE_ERRORS = Counter(
    "verdict_entity_store_errors_total",
    "Failed entity store round trips (retried or not)",
    ["kind"],
)
CORRUPT_ENTITIES = Counter(
    "verdict_entity_corrupt_total", "Stored entities that could not be decoded", ["reason"]
)
INVALIDATIONS = Counter(
    "verdict_entity_invalidations_total", "Invalidation messages received from other replicas"
)
WRITE_CONFLICTS = Counter(
    "verdict_entity_write_conflicts_total",
    "Entity writes checked again because another replica changed the store meanwhile",
)
AUTH_REFUSALS = Counter(
    "verdict_auth_refusals_total",
    "Calls refused at the edge: no or bad identity, method or policy store not granted",
    ["reason"],
)
CALLS_REFUSED = Counter(
    "verdict_calls_refused_total", "Calls refused before any work, by reason", ["reason"]
)
WORKER_CALLS = Counter(
    "verdict_worker_calls_total",
    "Calls of Verdict's services admitted, by worker process (its index under --workers); "
    "shows how the kernel spread connections over the workers",
    ["worker"],
)
LOG_LINES_DROPPED = Counter(
    "verdict_log_lines_dropped_total",
    "Log lines dropped because stderr's reader fell behind by more than the backlog "
    "(telemetry/log_writer.py); decisions never wait for the log",
)
CONFIG_RELOADS = Counter(
    "verdict_config_reloads_total",
    "Configuration files re-read after a change on disk (callers file and JWKS, TLS files)",
    ["file", "result"],
)
POLICY_RELOADS = Counter(
    "verdict_policy_reloads_total",
    "Policy stores changed by a reload, by result (reloaded, added, removed, failed)",
    ["result"],
)
POLICY_STORE_INFO = Gauge(
    "verdict_policy_store_info",
    "The policy version each store serves (value 1; with workers, how many serve it)",
    ["store", "version"],
    multiprocess_mode="livesum",
)
AUDIT_RECORDS = Counter(
    "verdict_audit_records_total",
    "Decision audit records, by what became of them (written, dropped, failed)",
    ["result"],
)
AUDIT_QUEUE_DEPTH = Gauge(
    "verdict_audit_queue_depth",
    "Audit records waiting to be written (the bounded queue; summed over workers)",
    multiprocess_mode="livesum",
)
RPC_DURATION = Histogram(
    "verdict_rpc_duration_seconds",
    "Server time of unary RPCs, by method and status code (the count is the number of calls)",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DECISIONS = Counter(
    "verdict_decisions_total",
    "Decisions made (batch items included), by store, decision and deny kind",
    ["store", "decision", "deny_kind"],
)
BATCH_ITEMS = Histogram(
    "verdict_batch_items",
    "Items per BatchAuthorize call",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
ENTITY_READ_SECONDS = Histogram(
    "verdict_entity_read_seconds",
    "Time to read one decision's entity slice from the entity store (cache hits included)",
    ["store"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
EVALUATION_ERRORS = Counter(
    "verdict_evaluation_errors_total",
    "Decisions in which policies errored (whatever the decision), by store",
    ["store"],
)
