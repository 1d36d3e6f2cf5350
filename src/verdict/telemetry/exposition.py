"""Serve the Prometheus metrics over plain HTTP on their own port (never the gRPC port)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


def start_metrics_server(listen: str, registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serve ``/metrics`` on ``HOST:PORT`` (port 0 picks a free one) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(
        int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry
    )
    return server


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that sums the metrics every worker process wrote under ``directory``
    (prometheus_client's multiprocess mode: counters add up across processes, dead ones too)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry
