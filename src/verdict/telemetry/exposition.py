"""Serve the Prometheus metrics over plain HTTP on their own port (never the gRPC port)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server


def start_metrics_server(listen: str) -> WSGIServer:
    """Serve ``/metrics`` on ``HOST:PORT`` (port 0 picks a free one) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    return server
