"""The domain exception hierarchy; gRPC status codes are assigned to these only in the transport.

    VerdictError
    ├── RequestError            a request field is invalid (names the field)
    │   ├── BatchTooLargeError  more items than the configured batch limit
    │   └── ValueBudgetError    a call's fields together hold too many JSON values
    ├── PolicyLoadError         a policy store cannot be loaded (file:line diagnostics)
    ├── StoreUnavailableError   the entity store cannot answer right now
    ├── StaleReadError          the requested minimum entity version is not available
    ├── EntityDataError         stored entity data is corrupt or fails the schema
    └── InternalError           an unexpected failure, already logged; fixed message

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


class BatchTooLargeError(RequestError):
    """A batch holds more items than the server accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("requests", f"batch of {size} items exceeds the limit of {limit}")


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


class StoreUnavailableError(VerdictError):
    """The entity store cannot be reached or timed out."""


class StaleReadError(VerdictError):
    """Data at least as fresh as the requested minimum entity version could not be read."""

    def __init__(self, wanted: int, available: int) -> None:
        self.wanted = wanted
        self.available = available
        super().__init__(f"min_entity_version: {wanted} is newer than the store's {available}")


class EntityDataError(VerdictError):
    """Entity data held by the store is corrupt or does not conform to the schema."""


class InternalError(VerdictError):
    """An unexpected exception was caught and logged; its text is never passed on."""

    def __init__(self) -> None:
        super().__init__("internal error")
