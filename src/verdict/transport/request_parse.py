"""Requests parsed by Verdict's edge, not by grpc, with their repeated fields counted first.

grpc parses a request with the method's deserializer before any handler runs. A malformed
message then came back UNKNOWN with the decoder's exception text; and a 4 MiB BatchAuthorize of
two million empty items was parsed whole (~230 MB, held after the call) before its size was
refused (attack round 10). Here the request's top-level fields are read on the wire first, and
a repeated field past its limit is refused INVALID_ARGUMENT before anything is built; then the
message is parsed, a DecodeError refused as ``request: not a valid protobuf message``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.errors import RequestError, VerdictError, batch_limit_text
from verdict.transport.pipeline import Behavior, Handler
from verdict.transport.status import status_for

Parse = Callable[[bytes], object]
_LENGTH_DELIMITED, _START_GROUP, _END_GROUP = 2, 3, 4


@dataclass(frozen=True)
class RepeatedLimit:
    """At most ``limit`` occurrences of the length-delimited field ``number`` of a request;
    past it the call is refused as ``problem`` on the field ``name``."""

    number: int
    name: str
    limit: int
    problem: str


def count_up_to(raw: bytes, number: int, limit: int) -> int:
    """How many times the length-delimited field ``number`` occurs at the top level of the
    serialised message ``raw``, counted until it passes ``limit`` (nested messages and groups
    are stepped over, never read). Stops at anything it cannot step over (a cut tag, an end
    of group that closes nothing): the parser then decides, and the count so far is returned.

    Groups are stepped over, not stopped at: protobuf skips an unknown group and parses on,
    and four bytes of empty group in front of two million items hid them all from a counter
    that stopped there (attack round 11)."""
    count = position = 0
    end = len(raw)
    groups: list[int] = []  # field numbers of the groups open at ``position``
    while position < end:
        tag, position = _varint(raw, position)
        if tag < 0:
            break
        wire = tag & 7
        if wire == 0:
            value, position = _varint(raw, position)
            if value < 0:
                break
        elif wire == 1:
            position += 8
        elif wire == _LENGTH_DELIMITED:
            length, position = _varint(raw, position)
            if length < 0:
                break
            if tag >> 3 == number and not groups:
                count += 1
                if count > limit:
                    return count
            position += length
        elif wire == _START_GROUP:
            groups.append(tag >> 3)
        elif wire == _END_GROUP:
            if not groups or groups.pop() != tag >> 3:
                break
        elif wire == 5:
            position += 4
        else:
            break
    return count


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; (-1, position) if it is cut or
    longer than 10 bytes."""
    value = shift = 0
    for index in range(position, min(position + 10, len(raw))):
        byte = raw[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    return -1, position


def bounded_parse(parse: Parse, limit: RepeatedLimit | None) -> Parse:
    """``parse`` that first refuses a request holding more than ``limit`` items (RequestError)
    and turns a DecodeError into one naming ``request``."""

    def parse_bounded(raw: bytes) -> object:
        if limit is not None and count_up_to(raw, limit.number, limit.limit) > limit.limit:
            raise RequestError(limit.name, limit.problem)
        try:
            return parse(raw)
        except DecodeError:
            raise RequestError("request", "not a valid protobuf message") from None

    return parse_bounded


def with_bounded_parse(handler: Handler, limit: RepeatedLimit | None) -> Handler:
    """``handler`` whose request deserializer is ``bounded_parse`` of its own (for the caller
    check, which parses requests itself: its refusal of a RequestError covers these)."""
    if handler.unary_unary is None or handler.request_deserializer is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary,
        request_deserializer=bounded_parse(handler.request_deserializer, limit),
        response_serializer=handler.response_serializer,
    )


def parsed_here(handler: Handler) -> Handler:
    """``handler`` given the raw bytes by grpc and parsing them itself with its deserializer,
    a refusal answered with its status (without a caller check, which would parse them)."""
    inner: Any = handler.unary_unary  # a coroutine function under grpc.aio
    parse = handler.request_deserializer
    if inner is None or parse is None:
        return handler

    async def parsing(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> object:
        try:
            request = parse(raw)
        except VerdictError as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
        return await inner(request, context)

    behavior: Behavior = parsing
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=None, response_serializer=handler.response_serializer
    )


def repeated_limits(max_batch: int, max_uids: int) -> Mapping[str, RepeatedLimit]:
    """The limits of each method's repeated request field, by full method name (field numbers
    read from the generated messages, so a renumbering in the protos follows)."""
    uids_field = epb.GetEntitiesRequest.DESCRIPTOR.fields_by_name["uids"].number
    assert uids_field == epb.DeleteEntitiesRequest.DESCRIPTOR.fields_by_name["uids"].number
    batch_field = pb.BatchAuthorizeRequest.DESCRIPTOR.fields_by_name["requests"].number
    uids = RepeatedLimit(uids_field, "uids", max_uids, f"more than {max_uids} uids in one call")
    batch = RepeatedLimit(batch_field, "requests", max_batch, batch_limit_text(max_batch))
    return {
        "/verdict.v1.AuthorizationService/BatchAuthorize": batch,
        "/verdict.v1.EntityService/GetEntities": uids,
        "/verdict.v1.EntityService/DeleteEntities": uids,
    }
