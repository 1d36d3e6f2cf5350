"""Tests of the domain-error to gRPC-status table."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from verdict import errors
from verdict.transport.status import STATUS_TABLE, status_for, status_message


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def test_every_domain_error_is_mapped() -> None:
    """Each error of the domain tree (verdict.errors) resolves to an explicit table entry."""
    mapped = tuple(t for t, _ in STATUS_TABLE)
    domain = [t for t in all_subclasses(errors.VerdictError) if t.__module__ == errors.__name__]
    assert len(domain) >= 7
    for error_type in domain:
        assert issubclass(error_type, mapped), error_type


def test_codes_and_messages() -> None:
    """Request errors name the field; infrastructure errors get fixed messages."""
    assert status_for(errors.RequestError("principal.id", "must not be empty")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "principal.id: must not be empty",
    )
    assert status_for(errors.BatchTooLargeError(5, 4))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(errors.StoreUnavailableError("redis at 10.0.0.1 refused")) == (
        grpc.StatusCode.UNAVAILABLE,
        "entity store unavailable",
    )
    assert status_for(errors.StoreNotLoadedError("lending")) == (
        grpc.StatusCode.UNAVAILABLE,
        "entity store not loaded",
    )
    assert status_for(errors.ReplacedVersionError(5, 9))[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.InternalError()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert status_for(errors.EntityDataError("x"))[0] is grpc.StatusCode.INTERNAL


def test_request_errors_carry_a_bad_request_detail() -> None:
    """A request error's status holds a BadRequest field violation; others hold no detail."""
    status = status_message(errors.RequestError("context_json", "attribute \udc80 must be a Bool"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "context_json: attribute \\udc80 must be a Bool"
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("context_json", "attribute \\udc80 must be a Bool")
    ]
    assert not status_message(errors.InternalError()).details
    assert not status_message(errors.StoreUnavailableError("redis")).details
