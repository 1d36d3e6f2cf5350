"""The one table that maps domain errors to gRPC status codes and caller-safe messages."""

from __future__ import annotations

import grpc

from verdict.errors import (
    DeadlineExceededError,
    EntityDataError,
    InternalError,
    PolicyLoadError,
    RequestError,
    StaleReadError,
    StoreUnavailableError,
    VerdictError,
)

INTERNAL_MESSAGE = "internal error"

# Most specific classes first; every VerdictError subclass must resolve to an entry here.
STATUS_TABLE: tuple[tuple[type[VerdictError], grpc.StatusCode], ...] = (
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (StaleReadError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (EntityDataError, grpc.StatusCode.INTERNAL),
    (PolicyLoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (InternalError, grpc.StatusCode.INTERNAL),
)


def status_for(error: VerdictError) -> tuple[grpc.StatusCode, str]:
    """The status code and message sent to the caller for a domain error."""
    for error_type, code in STATUS_TABLE:
        if isinstance(error, error_type):
            return code, wire_text(_message(error))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def wire_text(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) escaped as ``\\udXXX``.

    grpc cannot encode such a message: the abort fails and the caller never gets a status.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _message(error: VerdictError) -> str:
    if isinstance(error, StoreUnavailableError):
        return "entity store unavailable"
    if isinstance(error, PolicyLoadError):
        return "policy store not loaded"
    return str(error)
