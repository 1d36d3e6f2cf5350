"""The domain exception hierarchy; gRPC status codes are assigned to these only in the transport.

    VerdictError
    ├── RequestError            a request field is invalid (names the field)
    │   ├── BatchTooLargeError  more items than the configured batch limit
    │   └── ValueBudgetError    a call's fields together hold too many JSON values
    ├── PolicyLoadError         a policy store cannot be loaded (file:line diagnostics)
    ├── StoreUnavailableError   the entity store cannot answer right now
    │   ├── StoreConnectError   no connection could be made (names why: authentication, ...)
    │   │   └── StoreRefusedError  nothing listens at the store's address (connection refused)
    │   └── StoreNotLoadedError a store's entities are not (or no longer) loaded
    ├── StaleReadError          the requested minimum entity version is not available
    │   └── ReplacedVersionError  it is from before the store was last replaced
    ├── WriteConflictError      the store changed while a write was being checked
    ├── WritesRefusedError      this deployment takes no entity writes (names the reason)
    ├── DeadlineExceededError   the caller's deadline passed before the answer was ready
    ├── EntityDataError         stored entity data is corrupt or fails the schema
    ├── InternalError           an unexpected failure, already logged; fixed message
    ├── UnauthenticatedError    a call that needs a caller identity has none (or a bad token)
    ├── PermissionDeniedError   the caller is not granted this method or policy store
    └── ConfigError             a configuration file is invalid (file:line diagnostics)

Messages of these exceptions are written for the caller: they name the field and never carry
entity attributes, context values or text of foreign exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


class VerdictError(Exception):
    """Base of every error Verdict raises on purpose."""


class RequestError(VerdictError):
    """A request is invalid; ``field`` names the offending request field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def batch_limit_text(limit: int) -> str:
    """The problem of a batch past ``limit`` items: the same whether the engine counted the
    items or the edge stopped counting them on the wire (request_parse)."""
    return f"more than {limit} items in one batch"


class BatchTooLargeError(RequestError):
    """A batch holds more items than the server accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("requests", batch_limit_text(limit))
        self.size = size


class ValueBudgetError(RequestError):
    """The fields of a whole call (a batch's items together) hold more JSON values than the
    server parses for one call; the call is refused as a whole, not item by item."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem found while loading a policy store, located by file and line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyLoadError(VerdictError):
    """A policy store failed to load; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class EntitiesChangedError(PolicyLoadError):
    """A store's entities.json was not, when read, the file its policies' load found (it
    changed in between): the start loads again, a reload fails and is retried."""


class StoreUnavailableError(VerdictError):
    """The entity store cannot be reached or timed out."""


class StoreConnectError(StoreUnavailableError):
    """No connection to the entity store could be made; ``reason`` says why in a few words
    (``authentication failed``, ``host name not found``...), never a foreign exception's text."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"cannot connect to redis: {reason}")
        self.reason = reason


class StoreRefusedError(StoreConnectError):
    """The entity store refused every connection (nothing listens at its address)."""

    def __init__(self) -> None:
        super().__init__("connection refused", "redis refused the connection")


class StoreNotLoadedError(StoreUnavailableError):
    """A store's entities were never loaded, or the data they came from is gone."""

    def __init__(self, store_id: str) -> None:
        super().__init__(f"store {store_id} is not loaded")


class StaleReadError(VerdictError):
    """Data at least as fresh as the requested minimum entity version could not be read."""

    def __init__(self, wanted: int, available: int) -> None:
        self.wanted = wanted
        self.available = available
        super().__init__(f"min_entity_version: {wanted} is newer than the store's {available}")


class ReplacedVersionError(StaleReadError):
    """The requested version belongs to data the store no longer holds: it was replaced since
    (a load, or a first write after data loss started a new epoch at ``epoch``)."""

    def __init__(self, wanted: int, epoch: int) -> None:
        self.wanted = wanted
        self.available = epoch
        VerdictError.__init__(
            self, f"min_entity_version: {wanted} is from before the store was replaced at {epoch}"
        )


class WriteConflictError(VerdictError):
    """The store's version moved past the one a write was checked at; ``current`` is the new
    version (read again at least that fresh before retrying)."""

    def __init__(
        self, current: int, message: str = "the entity store changed during the write"
    ) -> None:
        self.current = current
        super().__init__(message)


class AuditUnavailableError(VerdictError):
    """The audit log cannot take the decision's record, and the audit mode is "deny": no
    decision is answered without its record (fail closed)."""

    def __init__(self) -> None:
        super().__init__("audit log unavailable")


class WritesRefusedError(VerdictError):
    """Entity writes are refused by configuration, not because of the request: the message
    names the reason (e.g. an in-memory store served by several worker processes)."""


class DeadlineExceededError(VerdictError):
    """The caller's deadline passed: nothing more is read or evaluated for it."""

    def __init__(self) -> None:
        super().__init__("deadline exceeded before the decision was evaluated")


class WriteOutcomeUnknownError(DeadlineExceededError):
    """A write was sent to the entity store, which did not answer: it may still be applied.

    Redis runs a script sent before a timeout once it is free again; answering such a write
    UNAVAILABLE ("cannot answer") told the writer it had not happened, and it was applied
    afterwards (attack round 15). Raised when every attempt failed and one of them may have
    reached Redis. gRPC's DEADLINE_EXCEEDED is the code for "may have completed";
    UNAVAILABLE stays for writes that never reached the store."""

    def __init__(self) -> None:
        VerdictError.__init__(
            self,
            "the entity store did not answer in time: the write may still be applied; read it "
            "back (GetEntities) before sending it again",
        )


class EntityDataError(VerdictError):
    """Entity data held by the store is corrupt or does not conform to the schema."""


class InternalError(VerdictError):
    """An unexpected exception was caught and logged; its text is never passed on."""

    def __init__(self) -> None:
        super().__init__("internal error")


class UnauthenticatedError(VerdictError):
    """A call needs a caller identity and carries none, or its token does not verify.

    The message is for logs only (it never names the token); callers get a fixed text.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PermissionDeniedError(VerdictError):
    """The caller's grants do not cover this method or policy store; callers get a fixed text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConfigError(VerdictError):
    """A configuration file (callers file, JWKS, certificates) is invalid; fatal at start."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))
