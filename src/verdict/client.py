"""A small typed client for Verdict, async and sync, shared by users, tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

UidLike = EntityUid | str
Metadata = Sequence[tuple[str, str]]
EntitiesLike = str | Sequence[Mapping[str, Any]]
DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIES = 3
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
    min_entity_version: int = 0,
) -> pb.IsAuthorizedRequest:
    """An IsAuthorizedRequest; uids are EntityUid or strings (``Type::"id"`` or ``Type::id``).

    ``min_entity_version`` (from ``put_entities``) makes the decision read at least that write."""
    return pb.IsAuthorizedRequest(
        min_entity_version=min_entity_version,
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


@dataclass(frozen=True)
class EntityWrite:
    """The store's entity version after a write (pass it as ``min_entity_version`` to read the
    write back), and how many entities the write touched."""

    version: int
    count: int


@dataclass(frozen=True)
class EntityRead:
    """Entities found (Cedar JSON, in request order), uids not found, and the version read."""

    entities: list[dict[str, Any]]
    missing: list[EntityUid]
    version: int


def channel_options(retries: int) -> list[tuple[str, Any]]:
    """grpc channel options: calls that are safe to repeat (decisions, entity reads) are retried
    on UNAVAILABLE, ``retries`` times at most, with exponential backoff, within their deadline.
    Writes are never retried by the client: the caller decides (it has the version)."""
    if retries <= 0:
        return [("grpc.enable_retries", 0)]
    names = [
        {"service": "verdict.v1.AuthorizationService"},
        {"service": "verdict.v1.EntityService", "method": "GetEntities"},
    ]
    policy = {
        "maxAttempts": min(5, retries + 1),  # grpc caps attempts at 5
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config = {"methodConfig": [{"name": names, "retryPolicy": policy}]}
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


def put_request(entities: EntitiesLike, store: str = "") -> epb.PutEntitiesRequest:
    """A PutEntitiesRequest from Cedar JSON entities (text, or a list of entity objects)."""
    text = entities if isinstance(entities, str) else json.dumps(list(entities))
    return epb.PutEntitiesRequest(policy_store_id=store, entities_json=text)


def delete_request(uids: Sequence[UidLike], store: str = "") -> epb.DeleteEntitiesRequest:
    """A DeleteEntitiesRequest for ``uids``."""
    items = [_uid(u, f"uids[{i}]") for i, u in enumerate(uids)]
    return epb.DeleteEntitiesRequest(policy_store_id=store, uids=items)


def get_request(uids: Sequence[UidLike], store: str = "") -> epb.GetEntitiesRequest:
    """A GetEntitiesRequest for ``uids``."""
    items = [_uid(u, f"uids[{i}]") for i, u in enumerate(uids)]
    return epb.GetEntitiesRequest(policy_store_id=store, uids=items)


class MalformedReplyError(ValueError):
    """The server answered with something the API does not allow (a broken or hostile server);
    the message names the method and the field, never the reply's content."""


def entity_read(response: epb.GetEntitiesResponse) -> EntityRead:
    """The typed form of a GetEntitiesResponse; MalformedReplyError if it is not one."""
    try:
        entities = json.loads(response.entities_json) if response.entities_json else []
    except (ValueError, RecursionError):  # RecursionError: nesting past Python's parser
        raise MalformedReplyError("GetEntities: entities_json is not valid JSON") from None
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise MalformedReplyError("GetEntities: entities_json is not a JSON array of entities")
    missing = [EntityUid(u.type, u.id) for u in response.missing]
    return EntityRead(entities, missing, response.version)


class AsyncVerdictClient:
    """grpc.aio client; use ``async with`` or call ``close``.

    ``credentials`` make a TLS channel (see ``tls_credentials``); ``metadata`` is sent with
    every call (see ``bearer``); ``timeout`` is every call's deadline in seconds; decisions and
    entity reads are retried on UNAVAILABLE up to ``retries`` times (0: never); ``options`` are
    more grpc channel options (e.g. ``grpc.ssl_target_name_override``).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
        retries: int = DEFAULT_RETRIES,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        options_list = channel_options(retries) + list((options or {}).items())
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options_list)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options_list)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self._entities = epb_grpc.EntityServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    async def put_entities(self, entities: EntitiesLike, *, store: str = "") -> EntityWrite:
        """Create or replace entities (all or nothing); the new entity version."""
        response: epb.PutEntitiesResponse = await self._entities.PutEntities(
            put_request(entities, store), timeout=self.timeout, metadata=self.metadata
        )
        return EntityWrite(response.version, response.written)

    async def delete_entities(self, uids: Sequence[UidLike], *, store: str = "") -> EntityWrite:
        """Delete entities by uid; the new entity version and how many existed."""
        response: epb.DeleteEntitiesResponse = await self._entities.DeleteEntities(
            delete_request(uids, store), timeout=self.timeout, metadata=self.metadata
        )
        return EntityWrite(response.version, response.deleted)

    async def get_entities(self, uids: Sequence[UidLike], *, store: str = "") -> EntityRead:
        """Read entities by uid as stored."""
        response: epb.GetEntitiesResponse = await self._entities.GetEntities(
            get_request(uids, store), timeout=self.timeout, metadata=self.metadata
        )
        return entity_read(response)

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
        retries: int = DEFAULT_RETRIES,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        options_list = channel_options(retries) + list((options or {}).items())
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options_list)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options_list)
        self._stub = pb_grpc.AuthorizationServiceStub(self._channel)
        self._entities = epb_grpc.EntityServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def put_entities(self, entities: EntitiesLike, *, store: str = "") -> EntityWrite:
        """Create or replace entities (all or nothing); the new entity version."""
        response: epb.PutEntitiesResponse = self._entities.PutEntities(
            put_request(entities, store), timeout=self.timeout, metadata=self.metadata
        )
        return EntityWrite(response.version, response.written)

    def delete_entities(self, uids: Sequence[UidLike], *, store: str = "") -> EntityWrite:
        """Delete entities by uid; the new entity version and how many existed."""
        response: epb.DeleteEntitiesResponse = self._entities.DeleteEntities(
            delete_request(uids, store), timeout=self.timeout, metadata=self.metadata
        )
        return EntityWrite(response.version, response.deleted)

    def get_entities(self, uids: Sequence[UidLike], *, store: str = "") -> EntityRead:
        """Read entities by uid as stored."""
        response: epb.GetEntitiesResponse = self._entities.GetEntities(
            get_request(uids, store), timeout=self.timeout, metadata=self.metadata
        )
        return entity_read(response)

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
