"""The one table that maps domain errors to gRPC status codes and caller-safe messages."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from verdict.errors import (
    AuditUnavailableError,
    ConfigError,
    DeadlineExceededError,
    EntityDataError,
    InternalError,
    PermissionDeniedError,
    PolicyLoadError,
    RequestError,
    StaleReadError,
    StoreNotLoadedError,
    StoreUnavailableError,
    UnauthenticatedError,
    VerdictError,
    WriteConflictError,
    WritesRefusedError,
)

INTERNAL_MESSAGE = "internal error"
# Refusals name neither the rule nor other callers, nor what was wrong with a token.
UNAUTHENTICATED_MESSAGE = "unauthenticated"
PERMISSION_DENIED_MESSAGE = "permission denied"

# Most specific classes first; every VerdictError subclass must resolve to an entry here.
STATUS_TABLE: tuple[tuple[type[VerdictError], grpc.StatusCode], ...] = (
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (AuditUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (StaleReadError, grpc.StatusCode.FAILED_PRECONDITION),
    (WriteConflictError, grpc.StatusCode.ABORTED),
    (WritesRefusedError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (EntityDataError, grpc.StatusCode.INTERNAL),
    (PolicyLoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (InternalError, grpc.StatusCode.INTERNAL),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (ConfigError, grpc.StatusCode.INTERNAL),
)


def status_for(error: VerdictError) -> tuple[grpc.StatusCode, str]:
    """The status code and message sent to the caller for a domain error."""
    for error_type, code in STATUS_TABLE:
        if isinstance(error, error_type):
            return code, wire_text(_message(error))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def status_message(error: VerdictError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error: its code and message, and for a request error
    a google.rpc.BadRequest field violation (the field and the problem, as in the message) in
    the details, for clients that read errors by field."""
    code, message = status_for(error)
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(error, RequestError) and code is grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=wire_text(error.field), description=wire_text(error.problem)
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def status_metadata(error: VerdictError) -> tuple[tuple[str, str | bytes], ...]:
    """Trailing metadata carrying ``status_message(error)`` (``grpc-status-details-bin``),
    which ``grpc_status.rpc_status.from_call`` reads back on the client."""
    metadata: tuple[tuple[str, str | bytes], ...] = rpc_status.to_status(
        status_message(error)
    ).trailing_metadata
    return metadata


def wire_text(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) escaped as ``\\udXXX``.

    grpc cannot encode such a message: the abort fails and the caller never gets a status.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _message(error: VerdictError) -> str:
    # The caller named the store; that it is not loaded tells an operator what to do.
    if isinstance(error, StoreNotLoadedError):
        return "entity store not loaded"
    if isinstance(error, StoreUnavailableError):
        return "entity store unavailable"
    if isinstance(error, PolicyLoadError):
        return "policy store not loaded"
    if isinstance(error, UnauthenticatedError):
        return UNAUTHENTICATED_MESSAGE
    if isinstance(error, PermissionDeniedError):
        return PERMISSION_DENIED_MESSAGE
    if isinstance(error, ConfigError):
        return INTERNAL_MESSAGE
    return str(error)
