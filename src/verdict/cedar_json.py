"""Pure helpers over Cedar JSON: strict parsing of caller JSON in one canonical form, and its uids.

Cedar reads several spellings as an entity reference (``{"__entity": {...}}`` with extra keys,
an ``__entity`` key beside others, records beside ``__extn``). A reference that Verdict does not
see is never loaded, and a forbid over it silently turns false. So caller JSON is accepted only
in one canonical form: ``{"__entity": {"type", "id"}}`` and ``{"__extn": {"fn", "arg"|"args"}}``
exactly, no ``__entity``/``__extn``/``__expr`` key anywhere else. What remains is read by
``referenced_uids`` exactly as Cedar reads it (plus plain ``{"type", "id"}`` records and
``["Type", "id"]`` arrays, which a schema may turn into references).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from verdict.errors import RequestError
from verdict.json_number_path import refused_number_path
from verdict.json_values import (
    C_PARSE_VALUES,
    DEFAULT_MAX_DEPTH,
    FLOAT_PROBLEM,
    LONG_MAX,
    LONG_MIN,
    LONG_PROBLEM,
    NUMBER_PROBLEMS,
    ValueBudget,
    parse_json,
)
from verdict.model import TYPE_NAME_PROBLEM, EntityUid, JsonObject, has_surrogate, is_type_name

ESCAPES = frozenset({"__entity", "__extn", "__expr"})
_ENTITY_KEYS = frozenset({"uid", "attrs", "parents", "tags"})
SURROGATE_PROBLEM = "contains a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
UID_PROBLEM = 'must be exactly {"type": ..., "id": ...} (or that inside {"__entity": ...})'
TYPE_PROBLEM = f"type {TYPE_NAME_PROBLEM}"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
# EntityUid(type, id) without the named tuple's Python-level __new__ (~0.25 µs less a uid; an
# entity file's walk makes several per entity): _uid(EntityUid, (type, id)).
_uid = tuple.__new__
_ARRAY_START = re.compile(r"[ \t\n\r]*\[")


def loads_strict(
    text: str, field: str, max_depth: int = DEFAULT_MAX_DEPTH, max_values: int | None = None
) -> Any:
    """Parse caller JSON losslessly: no floats, no NaN, no duplicate keys, 64-bit integers,
    bounded nesting and, given ``max_values``, a bounded number of JSON values."""
    return parse_json(text, field, max_depth, max_values).value


def child_path(path: str, key: str) -> str:
    """``path.key`` for plain attribute names, ``path["key"]`` (escaped, cut) for others."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:64])}]"


def check_record(
    value: Any,
    path: str,
    problem: str = "must be an object",
    refs: set[EntityUid] | None = None,
) -> JsonObject:
    """A record of Cedar values (context, attrs, tags) in canonical form; names the path. With
    ``refs``, the uids ``referenced_uids`` finds in it are added to it in the same walk."""
    if not isinstance(value, dict):
        raise RequestError(path, problem)
    if not ESCAPES.isdisjoint(value):
        reserved = min(ESCAPES.intersection(value))
        raise RequestError(path, f'uses the reserved key "{reserved}" as an attribute name')
    _check_values(value, path, refs)
    return value


class _Inside(str):
    """A path step inside an escape (``.__extn.arg``), appended as is."""


# Where a container sits: its parent's trail and its key there (None: the record itself).
# The caller-facing path is joined from it only when a check fails; building a path string
# for every container cost more than all the checks together.
_Trail = tuple[Any, str | int] | None
_CONTAINERS = (dict, list)


def _check_values(record: JsonObject, path: str, refs: set[EntityUid] | None = None) -> None:
    # Iterative; scalars are checked in place (ASCII strings, the common case, cost one
    # isascii()), containers are pushed with their trail. With ``refs``, every container is
    # also read as ``referenced_uids`` reads it (the same rules, one walk instead of two):
    # it reaches the same containers, since escapes are checked here before any is read.
    stack: list[tuple[Any, _Trail]] = [(record, None)]
    while stack:
        item, trail = stack.pop()
        if isinstance(item, list):
            if refs is not None and (pair := _uid_pair(item)) is not None:
                refs.add(pair)
            for index, child in enumerate(item):
                if isinstance(child, str):
                    if not child.isascii() and has_surrogate(child):
                        raise RequestError(_path(path, (trail, index)), SURROGATE_PROBLEM)
                elif isinstance(child, _CONTAINERS):
                    if not _sound_reference(child, refs):
                        stack.append((child, (trail, index)))
                elif child.__class__ is float or (
                    child.__class__ is int and not LONG_MIN <= child <= LONG_MAX
                ):  # the strict parse makes neither; its decoder without hooks does
                    raise RequestError(_path(path, (trail, index)), _number_problem(child))
            continue
        pairs: Iterable[tuple[str, Any]]
        if len(item) == 1 and "__entity" in item:
            # A reference, most escapes: read as _escape_children reads it, without the call.
            inner = item["__entity"]
            if (problem := _uid_problem(inner)) is not None:
                raise RequestError(_path(path, (trail, _Inside(".__entity"))), problem)
            if refs is not None:
                refs.add(_uid(EntityUid, (inner["type"], inner["id"])))
            continue
        if ESCAPES.isdisjoint(item):
            pairs = item.items()
            if refs is not None:
                type_, id_ = item.get("type"), item.get("id")
                if isinstance(type_, str) and isinstance(id_, str) and is_type_name(type_):
                    refs.add(EntityUid(type_, id_))
        else:
            pairs = _escape_children(item, path, trail)
            if refs is not None and "__entity" in item:  # checked: exactly {"type", "id"}
                inner = item["__entity"]
                refs.add(EntityUid(inner["type"], inner["id"]))
        for key, child in pairs:
            if isinstance(child, str):
                if not child.isascii() and has_surrogate(child):
                    raise RequestError(_path(path, (trail, key)), SURROGATE_PROBLEM)
            elif isinstance(child, _CONTAINERS):
                if not _sound_reference(child, refs):
                    stack.append((child, (trail, key)))
            elif child.__class__ is float or (
                child.__class__ is int and not LONG_MIN <= child <= LONG_MAX
            ):  # the strict parse makes neither; its decoder without hooks does
                raise RequestError(_path(path, (trail, key)), _number_problem(child))
            if not key.isascii() and has_surrogate(key):
                raise RequestError(_path(path, (trail, key)), SURROGATE_PROBLEM)


def _sound_reference(value: Any, refs: set[EntityUid] | None) -> bool:
    """Whether ``value`` is a sound ``{"__entity": {"type", "id"}}`` (added to ``refs``): read
    where it is met, as popping it would (it can raise nothing), without the stack's trip. A
    reference that is not sound is pushed, so its refusal comes when it came before."""
    if value.__class__ is not dict or len(value) != 1 or "__entity" not in value:
        return False
    inner = value["__entity"]
    if _uid_problem(inner) is not None:
        return False
    if refs is not None:
        refs.add(_uid(EntityUid, (inner["type"], inner["id"])))
    return True


def _number_problem(value: Any) -> str:
    """What is wrong with a float or an integer past 64 bits: the strict parse never makes
    one, but its decoder without hooks (for entity files: entity_items.py) does,
    and its items are walked here before anything else reads them."""
    return FLOAT_PROBLEM if value.__class__ is float else LONG_PROBLEM


def _path(root: str, trail: _Trail) -> str:
    """The caller-facing path of ``trail`` below ``root`` (``root.a[3]["b c"]``)."""
    keys: list[str | int] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    path = root
    for key in reversed(keys):
        if isinstance(key, int):
            path = f"{path}[{key}]"
        else:
            path = path + key if isinstance(key, _Inside) else child_path(path, key)
    return path


def _escape_children(item: JsonObject, root: str, trail: _Trail) -> list[tuple[str, Any]]:
    """Check one escape object; return the values inside it that are Cedar values themselves."""
    if "__expr" in item:
        raise RequestError(
            _path(root, trail), 'uses the "__expr" escape, which Cedar no longer supports'
        )
    name = "__entity" if "__entity" in item else "__extn"
    if len(item) != 1:
        raise RequestError(_path(root, trail), f'has keys beside "{name}"; an escape must be alone')
    inner = item[name]
    if name == "__entity":
        if (problem := _uid_problem(inner)) is not None:
            raise RequestError(_path(root, (trail, _Inside(".__entity"))), problem)
        return []
    if isinstance(inner, dict) and isinstance(inner.get("fn"), str):
        if set(inner) == {"fn", "arg"}:
            return [(_Inside(".__extn.arg"), inner["arg"])]
        if set(inner) == {"fn", "args"} and isinstance(inner["args"], list):
            return [(_Inside(".__extn.args"), inner["args"])]
        problem = 'must hold exactly "fn" and either "arg" or an "args" list'
    else:
        problem = 'must be {"fn": "<name>", "arg": <value>}'
    raise RequestError(_path(root, (trail, _Inside(".__extn"))), problem)


def parse_context_json(
    text: str,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int | None = None,
    budget: ValueBudget | None = None,
) -> JsonObject:
    """Parse a request's context: empty means ``{}``; anything but a JSON object is an error."""
    if not text.strip():
        return {}
    try:
        value = parse_json(text, "context_json", max_depth, max_values, budget=budget).value
    except RequestError as exc:
        raise _number_named(exc, text) from None
    return check_record(value, "context_json", "must be a JSON object (a Cedar record)")


def _number_named(exc: RequestError, text: str) -> RequestError:
    """``exc``, naming the attribute when it refuses a number: a context is small enough to
    be read again for that (a text of more values than json.loads reads at once keeps the
    plain refusal: the error path must not cost more than the parse did)."""
    if exc.problem not in NUMBER_PROBLEMS:
        return exc
    if text.count(",") + text.count("[") + text.count("{") >= C_PARSE_VALUES:
        return exc
    path = refused_number_path(text, child_path)
    if path is None:
        return exc
    return RequestError(exc.field, f"attribute {path} {exc.problem}")


def parse_entities_json(
    text: str,
    field: str = "entities_json",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int | None = None,
    budget: ValueBudget | None = None,
) -> tuple[JsonObject, ...]:
    """Parse a Cedar JSON entity array, checking each item's shape (not yet its schema)."""
    if not text.strip():
        return ()
    value = parse_json(text, field, max_depth, max_values, budget=budget).value
    return _entity_array(value, field)


def parse_entities_counted(
    text: str, field: str, max_depth: int, max_entity_values: int
) -> tuple[tuple[JsonObject, ...], tuple[int, ...]]:
    """``parse_entities_json`` for writes: at most ``max_entity_values`` JSON values in each
    entity (refused naming ``field[i]``); returns each entity's number of values too."""
    if not text.strip():
        return (), ()
    # Anything but an array is refused below; until then it may cost one entity's worth.
    whole = None if _ARRAY_START.match(text) else max_entity_values
    parsed = parse_json(text, field, max_depth, whole, max_item_values=max_entity_values)
    return _entity_array(parsed.value, field), parsed.item_values


def _entity_array(value: Any, field: str) -> tuple[JsonObject, ...]:
    if not isinstance(value, list):
        raise RequestError(field, "must be a JSON array of Cedar entities")
    for index, item in enumerate(value):
        check_entity_shape(item, f"{field}[{index}]")
    return tuple(value)


def check_entity_shape(item: Any, where: str) -> EntityUid:
    """Check one Cedar JSON entity's structure and canonical form; return its uid."""
    return _check_entity(item, where, None)


def check_entity(item: Any, where: str) -> tuple[EntityUid, frozenset[EntityUid]]:
    """``check_entity_shape`` and ``entity_references`` of one entity, in one walk of it."""
    refs: set[EntityUid] = set()
    return _check_entity(item, where, refs), frozenset(refs)


def check_entity_item(
    item: Any, where: str, index: int
) -> tuple[EntityUid, frozenset[EntityUid], list[EntityUid]]:
    """``check_entity`` of item ``index`` of the array ``where``, and its parents apart: the
    item's path (``where[index]``) is made only for a refusal (an entity file's walk pays for
    every string it builds)."""
    refs: set[EntityUid] = set()
    parents: list[EntityUid] = []
    try:
        uid = _check_entity(item, "", refs, parents)
    except RequestError as exc:  # every path below is "" + its suffix: prefix the item's
        raise RequestError(f"{where}[{index}]{exc.field}", exc.problem) from None
    return uid, frozenset(refs), parents


def _check_entity(
    item: Any, where: str, refs: set[EntityUid] | None, parents_found: list[EntityUid] | None = None
) -> EntityUid:
    if not isinstance(item, dict):
        raise RequestError(where, "must be an object with uid, attrs and parents")
    if not _ENTITY_KEYS.issuperset(item):
        raise RequestError(where, f"has unknown keys {sorted(set(item) - _ENTITY_KEYS)}")
    value = item.get("uid")
    uid = _plain_uid(value) or uid_at(value, f"{where}.uid")
    check_record(item.get("attrs", {}), f"{where}.attrs", refs=refs)
    if "tags" in item:  # most entities have none: an absent one is an empty record
        check_record(item["tags"], f"{where}.tags", refs=refs)
    parents = item.get("parents", [])
    if not isinstance(parents, list):
        raise RequestError(f"{where}.parents", "must be a list of entity uids")
    for index, parent in enumerate(parents):
        parent_uid = _plain_uid(parent) or uid_at(parent, f"{where}.parents[{index}]")
        if refs is not None:
            refs.add(parent_uid)
        if parents_found is not None:
            parents_found.append(parent_uid)
    # Checked last, so a broken field is named first. Cedar requires both (tags are
    # optional); Cedar's own refusal was worded as a schema mismatch, on stores that have no
    # schema too (attack round 15).
    if "attrs" not in item or "parents" not in item:
        missing = [key for key in ("attrs", "parents") if key not in item]
        named = " and ".join(f'"{key}"' for key in missing)
        raise RequestError(where, f"lacks {named} (a Cedar entity has uid, attrs and parents)")
    return uid


# Type names is_type_name accepted, looked up without a call (an entity file's walk checks
# ~3 uids per entity). Bounded in count and length: a caller cannot fill it.
_TYPE_NAMES: set[str] = set()
_TYPE_NAMES_KEPT, _TYPE_NAME_KEPT_CHARS = 1024, 128


def _uid_problem(value: Any) -> str | None:
    # Exactly the keys "type" and "id" (without building a set: this runs for every uid).
    if not isinstance(value, dict) or len(value) != 2 or "type" not in value or "id" not in value:
        return UID_PROBLEM
    type_, id_ = value["type"], value["id"]
    if not isinstance(type_, str):
        return TYPE_PROBLEM
    if type_ not in _TYPE_NAMES:
        if not is_type_name(type_):
            return TYPE_PROBLEM
        if len(_TYPE_NAMES) < _TYPE_NAMES_KEPT and len(type_) <= _TYPE_NAME_KEPT_CHARS:
            _TYPE_NAMES.add(type_)
    if not isinstance(id_, str):
        return "id must be a string"
    if not id_.isascii() and has_surrogate(id_):
        return f"id {SURROGATE_PROBLEM}"
    return None


def _plain_uid(value: Any) -> EntityUid | None:
    """``{"type", "id"}`` as a uid, the common case, checked without a path; None otherwise
    (an escape, or a refusal for ``uid_at`` to name). A uid is never falsy (two fields)."""
    if _uid_problem(value) is not None:
        return None
    return _uid(EntityUid, (value["type"], value["id"]))


def uid_at(value: Any, where: str) -> EntityUid:
    """Read a uid field (``{"type","id"}`` or ``{"__entity": {...}}``); RequestError names it."""
    if isinstance(value, dict) and "__entity" in value and len(value) == 1:
        value, where = value["__entity"], f"{where}.__entity"
    problem = _uid_problem(value)
    if problem is not None:
        raise RequestError(where, problem)
    return EntityUid(value["type"], value["id"])


def parse_uid(value: Any) -> EntityUid | None:
    """Read a uid in canonical form (any id, the empty one included); None if it is not one."""
    if isinstance(value, dict) and "__entity" in value and len(value) == 1:
        value = value["__entity"]
    if _uid_problem(value) is not None:
        return None
    return EntityUid(value["type"], value["id"])


def referenced_uids(value: Any) -> Iterator[EntityUid]:
    """Every uid a Cedar JSON value may reference; never fewer than Cedar reads.

    An ``__entity`` escape is a reference. With a schema, Cedar also reads a record with string
    ``type`` and ``id`` as a reference (extra keys ignored), and a two-string array
    ``["Type", "id"]`` too, so those count (such records' values are still searched). Anything
    else is searched through, escapes included: over-reporting only costs a lookup that finds
    nothing.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            uid = parse_uid(item) if "__entity" in item else None
            if uid is not None:
                yield uid
                continue
            type_, id_ = item.get("type"), item.get("id")
            if isinstance(type_, str) and isinstance(id_, str) and is_type_name(type_):
                yield EntityUid(type_, id_)
            stack.extend(item.values())
        elif isinstance(item, list):
            uid = _uid_pair(item)
            if uid is not None:
                yield uid
                continue
            stack.extend(item)


def _uid_pair(item: list[Any]) -> EntityUid | None:
    """``["Type", "id"]``: with a schema, Cedar reads a two-string array where it expects an
    entity as that uid (serde's sequence form of ``{"type", "id"}``), so it counts as one."""
    if len(item) != 2:
        return None
    type_, id_ = item
    if isinstance(type_, str) and isinstance(id_, str) and is_type_name(type_):
        return EntityUid(type_, id_)
    return None


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
