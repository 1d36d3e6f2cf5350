"""What grpc core may hold for a server: connections, streams, pending calls and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_MAX_PENDING_CALLS = 128
# Probes open a connection or two each; the port needs no more, and every one is a descriptor.
DEFAULT_MAX_HEALTH_CONNECTIONS = 16
# A health request is a service name: nothing larger is ever needed on the health port.
HEALTH_MAX_MESSAGE_BYTES = 4096
# A probe makes one call at a time; a caller that never reads holds each stream it opens.
HEALTH_MAX_STREAMS = 4
# Calls one connection may have open at once on the main port. A caller that never reads its
# replies holds each stream it opens (~2 KB) past the concurrency limit, which counts calls
# only until their reply is queued. grpc clients queue calls past the server's bound, except
# in the first round trip of a connection (before they see its SETTINGS), where a burst past
# it is refused (UNAVAILABLE, retryable): so the bound matches max_concurrent_calls' default.
DEFAULT_MAX_STREAMS_PER_CONNECTION = 256
# A request's metadata (grpc counts each entry's name and value plus 32 bytes): a bearer token,
# a request id and tracing headers take a few KiB; this is core's own hard limit.
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """What grpc core holds for the server: connections, how long an unproductive one may stay
    open, how long any one may live, and how many calls may wait for the event loop to pick
    them up."""

    max_connections: int = 1000
    handshake_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 300.0
    max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS
    max_health_connections: int = DEFAULT_MAX_HEALTH_CONNECTIONS
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0

    def for_health_port(self) -> ConnectionLimits:
        """The same timeouts for the plaintext health port, with its own connection and stream
        limits."""
        return replace(
            self,
            max_connections=self.max_health_connections,
            max_streams_per_connection=HEALTH_MAX_STREAMS,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """grpc core channel args; a connection over the limit is closed as soon as it is accepted.

        The handshake timeout also covers the wait for the client's HTTP/2 preface and SETTINGS,
        so a socket that sends a few bytes and stalls is closed (and its descriptor freed) then.

        Pending calls: when decisions are CPU-bound, calls wait in grpc core (one queue per
        method) until the event loop takes them, where no interceptor can count them. Past half
        of ``max_pending_calls`` core refuses a growing share of new calls at random (random
        early detection), past all of it every new call, without running any Python; the
        caller sees CANCELLED (core's status, not ours). Measured in docs/faults.md.
        """
        return [
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.server_handshake_timeout_ms", _ms(self.handshake_timeout_seconds)),
            ("grpc.max_connection_idle_ms", _ms(self.idle_timeout_seconds)),
            ("grpc.server.max_pending_requests", max(1, self.max_pending_calls // 2)),
            ("grpc.server.max_pending_requests_hard_limit", self.max_pending_calls),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.max_connection_age_ms", _ms(self.max_connection_age_seconds)),
            ("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace_seconds)),
            # One limit for a request's metadata, not two: between core's soft limit (8 KiB)
            # and its hard one (16 KiB) it refused requests at random, RESOURCE_EXHAUSTED
            # with no message (100 request ids passed, 200 failed one call in a few).
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
