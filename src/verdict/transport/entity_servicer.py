"""The EntityService servicer: entity writes and reads over gRPC, validated by the engine."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc
from verdict.engine.entity_writes import EntityWrites
from verdict.errors import RequestError
from verdict.model import EntityUid, JsonObject
from verdict.telemetry.log_budget import LogBudget
from verdict.transport.convert import MAX_UID_PART_BYTES, checked_uid
from verdict.transport.servicer import answer_or_abort

MAX_UIDS = 1000
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024
Context = grpc.aio.ServicerContext[object, object]


def uids_from_proto(
    uids: Sequence[pb.EntityUid], max_id_bytes: int = MAX_UID_PART_BYTES
) -> list[EntityUid]:
    """Check a repeated EntityUid field, naming the item at fault. Counted before any item is
    read: two million empty uids (4 MiB) made as many Python objects first, holding the event
    loop 1.3-5 s before the refusal (attack round 10)."""
    if len(uids) > MAX_UIDS:
        raise RequestError("uids", f"more than {MAX_UIDS} uids in one call")
    return [checked_uid(uid, f"uids[{i}]", max_id_bytes) for i, uid in enumerate(uids)]


class EntityServicer(epb_grpc.EntityServiceServicer):
    """gRPC face of EntityWrites."""

    def __init__(
        self,
        writes: EntityWrites,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_id_bytes: int = MAX_UID_PART_BYTES,
    ) -> None:
        self._writes = writes
        self._max_reply_bytes = max_reply_bytes
        self._max_id_bytes = max_id_bytes
        self._logs = LogBudget()

    async def PutEntities(
        self, request: epb.PutEntitiesRequest, context: Context
    ) -> epb.PutEntitiesResponse:
        async def work() -> epb.PutEntitiesResponse:
            version, written = await self._writes.put(
                request.policy_store_id, request.entities_json
            )
            return epb.PutEntitiesResponse(version=version, written=written)

        return await answer_or_abort(context, work, "PutEntities", self._logs)

    async def DeleteEntities(
        self, request: epb.DeleteEntitiesRequest, context: Context
    ) -> epb.DeleteEntitiesResponse:
        async def work() -> epb.DeleteEntitiesResponse:
            version, deleted = await self._writes.delete(
                request.policy_store_id, uids_from_proto(request.uids, self._max_id_bytes)
            )
            return epb.DeleteEntitiesResponse(version=version, deleted=deleted)

        return await answer_or_abort(context, work, "DeleteEntities", self._logs)

    async def GetEntities(
        self, request: epb.GetEntitiesRequest, context: Context
    ) -> epb.GetEntitiesResponse:
        async def work() -> epb.GetEntitiesResponse:
            # A uid named twice is read and sent once: repeats must not multiply the work.
            uids = list(dict.fromkeys(uids_from_proto(request.uids, self._max_id_bytes)))
            found, version = await self._writes.get(request.policy_store_id, uids)
            reply = epb.GetEntitiesResponse(
                entities_json=self._bounded_array([found[u] for u in uids if u in found]),
                missing=[pb.EntityUid(type=u.type, id=u.id) for u in uids if u not in found],
                version=version,
            )
            if reply.ByteSize() > self._max_reply_bytes:
                raise self._too_large()
            return reply

        return await answer_or_abort(context, work, "GetEntities", self._logs)

    def _bounded_array(self, entities: list[JsonObject]) -> str:
        """The JSON array of ``entities``, given up as soon as it passes the reply limit."""
        parts, size = [], 2
        for entity in entities:
            part = json.dumps(entity, ensure_ascii=False)
            size += len(part.encode()) + 1
            if size > self._max_reply_bytes:
                raise self._too_large()
            parts.append(part)
        return "[" + ",".join(parts) + "]"

    def _too_large(self) -> RequestError:
        return RequestError(
            "uids",
            f"the entities found exceed the reply limit of {self._max_reply_bytes} bytes; "
            "ask for fewer per call",
        )
