"""A small typed client for Verdict, async and sync, shared by users, tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

UidLike = EntityUid | str
Metadata = Sequence[tuple[str, str]]
DEFAULT_TIMEOUT = 2.0
# Decision values of IsAuthorizedResponse.decision, so callers need not import generated code.
ALLOW = pb.DECISION_ALLOW
DENY = pb.DECISION_DENY


def _uid(value: UidLike, field: str) -> pb.EntityUid:
    uid = value if isinstance(value, EntityUid) else parse_uid_arg(value, field)
    return pb.EntityUid(type=uid.type, id=uid.id)


def build_request(
    principal: UidLike,
    action: UidLike,
    resource: UidLike,
    *,
    context: Mapping[str, Any] | None = None,
    store: str = "",
    entities: Sequence[Mapping[str, Any]] | None = None,
) -> pb.IsAuthorizedRequest:
    """An IsAuthorizedRequest; uids are EntityUid or strings (``Type::"id"`` or ``Type::id``)."""
    return pb.IsAuthorizedRequest(
        policy_store_id=store,
        principal=_uid(principal, "principal"),
        action=_uid(action, "action"),
        resource=_uid(resource, "resource"),
        context_json=json.dumps(context) if context else "",
        entities_json=json.dumps(list(entities)) if entities else "",
    )


def tls_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials from PEM files: the CA that signed the server's certificate (None:
    the system roots) and, for mutual TLS, the client's certificate chain and key."""
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def bearer(token: str) -> Metadata:
    """Call metadata that authenticates with a static token or a JWT."""
    return (("authorization", f"Bearer {token}"),)


class AsyncVerdictClient:
    """grpc.aio client; use ``async with`` or call ``close``.

    ``credentials`` make a TLS channel (see ``tls_credentials``); ``metadata`` is sent with
    every call (see ``bearer``).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
    ) -> None:
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    async def is_authorized(
        self, principal: UidLike, action: UidLike, resource: UidLike, **kwargs: Any
    ) -> pb.IsAuthorizedResponse:
        """One decision; keyword arguments as for ``build_request``."""
        return await self.send(build_request(principal, action, resource, **kwargs))

    async def send(self, request: pb.IsAuthorizedRequest) -> pb.IsAuthorizedResponse:
        """Send a prepared request."""
        response: pb.IsAuthorizedResponse = await self._stub.IsAuthorized(
            request, timeout=self.timeout, metadata=self.metadata
        )
        return response

    async def batch(self, requests: Sequence[pb.IsAuthorizedRequest]) -> pb.BatchAuthorizeResponse:
        """Many decisions in one call; one result per request, in order."""
        response: pb.BatchAuthorizeResponse = await self._stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=list(requests)),
            timeout=self.timeout,
            metadata=self.metadata,
        )
        return response

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncVerdictClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class VerdictClient:
    """Blocking client with the same methods and options as AsyncVerdictClient."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
    ) -> None:
        if credentials is None:
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, credentials)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def is_authorized(
        self, principal: UidLike, action: UidLike, resource: UidLike, **kwargs: Any
    ) -> pb.IsAuthorizedResponse:
        """One decision; keyword arguments as for ``build_request``."""
        return self.send(build_request(principal, action, resource, **kwargs))

    def send(self, request: pb.IsAuthorizedRequest) -> pb.IsAuthorizedResponse:
        """Send a prepared request."""
        response: pb.IsAuthorizedResponse = self._stub.IsAuthorized(
            request, timeout=self.timeout, metadata=self.metadata
        )
        return response

    def batch(self, requests: Sequence[pb.IsAuthorizedRequest]) -> pb.BatchAuthorizeResponse:
        """Many decisions in one call; one result per request, in order."""
        response: pb.BatchAuthorizeResponse = self._stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=list(requests)),
            timeout=self.timeout,
            metadata=self.metadata,
        )
        return response

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> VerdictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
