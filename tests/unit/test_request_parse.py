"""The wire counter that refuses oversized repeated fields before a request is parsed, held
to protobuf's own parse on generated messages (hypothesis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.errors import RequestError
from verdict.transport.request_parse import (
    RepeatedLimit,
    bounded_parse,
    count_up_to,
    repeated_limits,
)

item = st.builds(
    pb.IsAuthorizedRequest,
    policy_store_id=st.text(max_size=5),
    context_json=st.text(max_size=20),
    explain=st.booleans(),
    principal=st.builds(pb.EntityUid, type=st.text(max_size=4), id=st.text(max_size=300)),
)
# Unknown top-level fields a caller may add: varint, 64-bit, length-delimited, 32-bit, groups.
unknown = st.sampled_from(
    [
        b"\x10\x96\x01",
        b"\x19" + b"\x00" * 8,
        b"\x22\x03abc",
        b"\x2d\x00\x00\x00\x00",
        b"\xa3\x06\xa4\x06",  # an empty group of field 100 (round 11: it hid what followed)
        b"\xa3\x06\x0a\x00\xab\x06\x0a\x00\xac\x06\xa4\x06",  # field-1 bytes inside groups
        b"\x0b\x0a\x00\x0c",  # field 1 as a group: not an item for protobuf either
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(item, max_size=12), noise=st.lists(unknown, max_size=4), limit=st.integers(0, 12)
)
def test_the_count_is_what_protobuf_parses_up_to_the_limit(
    items: list[pb.IsAuthorizedRequest], noise: list[bytes], limit: int
) -> None:
    raw = pb.BatchAuthorizeRequest(requests=items).SerializeToString()
    raw = b"".join(noise) + raw + b"".join(noise)
    parsed = pb.BatchAuthorizeRequest.FromString(raw)
    assert count_up_to(raw, 1, limit) == min(len(parsed.requests), limit + 1)


def test_a_batch_past_the_limit_is_refused_before_parsing_and_one_at_it_is_parsed() -> None:
    limit = repeated_limits(max_batch=3, max_uids=2)[
        "/verdict.v1.AuthorizationService/BatchAuthorize"
    ]
    parse = bounded_parse(pb.BatchAuthorizeRequest.FromString, limit)
    three = pb.BatchAuthorizeRequest(requests=[pb.IsAuthorizedRequest()] * 3).SerializeToString()
    assert len(parse(three).requests) == 3  # type: ignore[attr-defined]
    with pytest.raises(RequestError) as info:
        parse(three + b"\x0a\x00")
    assert (info.value.field, str(info.value)) == (
        "requests",
        "requests: more than 3 items in one batch",
    )


def test_uids_past_the_limit_and_malformed_bytes_are_request_errors() -> None:
    limit = repeated_limits(max_batch=3, max_uids=2)["/verdict.v1.EntityService/GetEntities"]
    parse = bounded_parse(epb.GetEntitiesRequest.FromString, limit)
    with pytest.raises(RequestError) as info:
        parse(b"\x12\x00" * 3)
    assert str(info.value) == "uids: more than 2 uids in one call"
    with pytest.raises(RequestError) as info:
        parse(b"\x0a\x05abc")  # a string field cut short
    assert str(info.value) == "request: not a valid protobuf message"


@pytest.mark.parametrize("raw", [b"\x0a", b"\x0a\xff", b"\xff" * 11, b"\x0b\x0c", b"\x0a\x05ab"])
def test_cut_or_odd_bytes_stop_the_count_and_leave_the_verdict_to_the_parser(raw: bytes) -> None:
    """A cut tag or length, an over-long varint, a group: counted no further (no error, no
    loop), and the parse that follows says whether the message is valid."""
    assert count_up_to(raw, 1, 10) <= 1
    parse = bounded_parse(
        pb.BatchAuthorizeRequest.FromString, RepeatedLimit(1, "requests", 10, "x")
    )
    assert outcome(parse, raw) in {"parsed", "request"}


def outcome(parse: Callable[[bytes], object], raw: bytes) -> str:
    """ "parsed", or the field a RequestError names."""
    try:
        parse(raw)
    except RequestError as exc:
        return exc.field
    return "parsed"
