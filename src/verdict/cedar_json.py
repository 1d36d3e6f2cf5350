"""Pure helpers over Cedar JSON: strict parsing of caller JSON and the uids values reference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from verdict.errors import RequestError
from verdict.model import EntityUid, JsonObject

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
DEFAULT_MAX_DEPTH = 32


def _reject_float(text: str) -> Any:
    raise ValueError("float")


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_long(text: str) -> int:
    value = int(text)
    if not LONG_MIN <= value <= LONG_MAX:
        raise ValueError("long")
    return value


def loads_strict(text: str, field: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse caller JSON losslessly: no floats, no NaN, 64-bit integers, bounded nesting."""
    try:
        value = json.loads(
            text, parse_float=_reject_float, parse_constant=_reject_constant, parse_int=_parse_long
        )
    except RecursionError:
        raise RequestError(field, f"is nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        if str(exc) == "float":
            raise RequestError(
                field, "contains a fractional number; Cedar has no floats (use decimal)"
            ) from None
        if str(exc) == "long":
            raise RequestError(field, "contains an integer outside Cedar's 64-bit range") from None
        raise RequestError(field, "is not valid JSON") from None
    _check_depth(value, field, max_depth)
    return value


def _check_depth(value: Any, field: str, max_depth: int) -> None:
    # Iterative, containers only: a hostile document must not exhaust the interpreter stack,
    # and a large entity file must not pay for a visit to every scalar.
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise RequestError(field, f"is nested deeper than {max_depth} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_context_json(text: str, max_depth: int = DEFAULT_MAX_DEPTH) -> JsonObject:
    """Parse a request's context: empty means ``{}``; anything but a JSON object is an error."""
    if not text.strip():
        return {}
    value = loads_strict(text, "context_json", max_depth)
    if not isinstance(value, dict):
        raise RequestError("context_json", "must be a JSON object (a Cedar record)")
    return value


def parse_entities_json(
    text: str, field: str = "entities_json", max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[JsonObject, ...]:
    """Parse a Cedar JSON entity array, checking each item's shape (not yet its schema)."""
    if not text.strip():
        return ()
    value = loads_strict(text, field, max_depth)
    if not isinstance(value, list):
        raise RequestError(field, "must be a JSON array of Cedar entities")
    for index, item in enumerate(value):
        check_entity_shape(item, f"{field}[{index}]")
    return tuple(value)


def check_entity_shape(item: Any, where: str) -> EntityUid:
    """Check one Cedar JSON entity's structure and return its uid."""
    if not isinstance(item, dict):
        raise RequestError(where, "must be an object with uid, attrs and parents")
    unknown = set(item) - {"uid", "attrs", "parents", "tags"}
    if unknown:
        raise RequestError(where, f"has unknown keys {sorted(unknown)}")
    uid = parse_uid(item.get("uid"))
    if uid is None:
        raise RequestError(
            f"{where}.uid", 'must be {"type": ..., "id": ...} with non-empty strings'
        )
    if not isinstance(item.get("attrs", {}), dict):
        raise RequestError(f"{where}.attrs", "must be an object")
    if not isinstance(item.get("tags", {}), dict):
        raise RequestError(f"{where}.tags", "must be an object")
    parents = item.get("parents", [])
    if not isinstance(parents, list) or any(parse_uid(p) is None for p in parents):
        raise RequestError(f"{where}.parents", "must be a list of entity uids")
    return uid


def parse_uid(value: Any) -> EntityUid | None:
    """Read a uid written as ``{"type","id"}`` or ``{"__entity": {...}}``; None if it is not one."""
    if isinstance(value, dict) and "__entity" in value and len(value) == 1:
        value = value["__entity"]
    if not isinstance(value, dict) or set(value) != {"type", "id"}:
        return None
    type_, id_ = value["type"], value["id"]
    if not isinstance(type_, str) or not isinstance(id_, str) or not type_ or not id_:
        return None
    return EntityUid(type_, id_)


def referenced_uids(value: Any) -> Iterator[EntityUid]:
    """Every uid a Cedar JSON value may reference.

    With a schema, Cedar reads a plain ``{"type","id"}`` record as an entity reference, so both
    forms count; over-reporting only costs a lookup that finds nothing.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            uid = parse_uid(item)
            if uid is not None:
                yield uid
            elif "__extn" not in item:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def entity_uid(entity: JsonObject) -> EntityUid:
    """The uid of an entity already checked by ``check_entity_shape``."""
    uid = parse_uid(entity["uid"])
    assert uid is not None
    return uid


def entity_references(entity: JsonObject) -> frozenset[EntityUid]:
    """Uids an entity points at: its parents and any uid inside its attributes or tags."""
    refs = {u for p in entity.get("parents", []) if (u := parse_uid(p)) is not None}
    refs.update(referenced_uids(entity.get("attrs", {})))
    refs.update(referenced_uids(entity.get("tags", {})))
    return frozenset(refs)
