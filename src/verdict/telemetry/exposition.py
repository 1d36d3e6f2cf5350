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
# The metrics port needs no identity: a scraper opens a connection or two at a time. Each
# connection is a thread and a descriptor; past this many at once new ones are closed at
# once, and each may take at most READ_TIMEOUT_SECONDS per read (a request sent half and left
# open held both for good, and a few hundred took every descriptor of the process).
MAX_METRICS_CONNECTIONS = 16
READ_TIMEOUT_SECONDS = 5.0


class _BoundedHandler(_SilentHandler):
    """prometheus_client's silent handler, with a read timeout."""

    timeout = READ_TIMEOUT_SECONDS


class _BoundedServer(ThreadingWSGIServer):
    """A thread per connection, at most MAX_METRICS_CONNECTIONS at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_METRICS_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the bound: closed, never served
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or went away: nothing to report (the default prints a
        traceback to stderr for each, which a caller could turn into a flood)."""


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
    server_class = type("MetricsServer", (_BoundedServer,), {"address_family": family})
    server: WSGIServer = make_server(
        address,
        int(port),
        metrics_only(make_wsgi_app(registry)),
        server_class,
        handler_class=_BoundedHandler,
    )
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that sums the metrics every worker process wrote under ``directory``
    (prometheus_client's multiprocess mode: counters add up across processes, dead ones too)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry
