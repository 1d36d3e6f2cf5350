"""Parse ``TYPE::ID`` uid arguments as written on command lines and in test files."""

from __future__ import annotations

from verdict.errors import RequestError
from verdict.model import EntityUid


def parse_uid_arg(text: str, field: str) -> EntityUid:
    """Split at the last ``::``; the id part is taken verbatim (no quotes, no escapes)."""
    type_, sep, id_ = text.rpartition("::")
    if not sep or not type_ or not id_:
        raise RequestError(field, "must be written TYPE::ID (for example Employee::olivia)")
    return EntityUid(type_, id_)
