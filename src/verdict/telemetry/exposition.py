"""Serve the Prometheus metrics over plain HTTP on their own port (never the gRPC port)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler
from prometheus_client.multiprocess import MultiProcessCollector

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
NOT_FOUND = b"not found: Verdict serves its metrics at /metrics\n"


def metrics_only(app: WsgiApp) -> WsgiApp:
    """``app`` at ``/metrics`` alone; every other path is 404 (a probe or a scanner asking
    ``/healthz`` must not be told everything is fine by a page of metrics)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [NOT_FOUND]
        return app(environ, start_response)

    return serve


def start_metrics_server(listen: str, registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serve ``/metrics`` on ``HOST:PORT`` (port 0 picks a free one) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    address = host.strip("[]") or "127.0.0.1"
    family, address = _get_best_family(address, int(port))  # type: ignore[no-untyped-call]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    server: WSGIServer = make_server(
        address,
        int(port),
        metrics_only(make_wsgi_app(registry)),
        server_class,
        handler_class=_SilentHandler,
    )
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that sums the metrics every worker process wrote under ``directory``
    (prometheus_client's multiprocess mode: counters add up across processes, dead ones too)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry
