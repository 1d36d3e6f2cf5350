"""A small typed client for Verdict, async and sync, shared by users, tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

UidLike = EntityUid | str
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


class AsyncVerdictClient:
    """grpc.aio client; use ``async with`` or call ``close``."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self.timeout = timeout

    async def is_authorized(
        self, principal: UidLike, action: UidLike, resource: UidLike, **kwargs: Any
    ) -> pb.IsAuthorizedResponse:
        """One decision; keyword arguments as for ``build_request``."""
        return await self.send(build_request(principal, action, resource, **kwargs))

    async def send(self, request: pb.IsAuthorizedRequest) -> pb.IsAuthorizedResponse:
        """Send a prepared request."""
        response: pb.IsAuthorizedResponse = await self._stub.IsAuthorized(
            request, timeout=self.timeout
        )
        return response

    async def batch(self, requests: Sequence[pb.IsAuthorizedRequest]) -> pb.BatchAuthorizeResponse:
        """Many decisions in one call; one result per request, in order."""
        response: pb.BatchAuthorizeResponse = await self._stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=list(requests)), timeout=self.timeout
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
    """Blocking client with the same methods as AsyncVerdictClient."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self.timeout = timeout

    def is_authorized(
        self, principal: UidLike, action: UidLike, resource: UidLike, **kwargs: Any
    ) -> pb.IsAuthorizedResponse:
        """One decision; keyword arguments as for ``build_request``."""
        return self.send(build_request(principal, action, resource, **kwargs))

    def send(self, request: pb.IsAuthorizedRequest) -> pb.IsAuthorizedResponse:
        """Send a prepared request."""
        response: pb.IsAuthorizedResponse = self._stub.IsAuthorized(request, timeout=self.timeout)
        return response

    def batch(self, requests: Sequence[pb.IsAuthorizedRequest]) -> pb.BatchAuthorizeResponse:
        """Many decisions in one call; one result per request, in order."""
        response: pb.BatchAuthorizeResponse = self._stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=list(requests)), timeout=self.timeout
        )
        return response

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> VerdictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
