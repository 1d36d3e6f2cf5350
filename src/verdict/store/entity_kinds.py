"""Entities Cedar's schema check treats alike: one key per kind, so a bulk load asks Cedar once.

Cedar's parse and schema check of an entity costs 4 µs plus 2-12 µs per attribute, and a
300,000-entity file is most often a few kinds of entity written many times over. Whether Cedar
accepts an entity depends on its type, its attribute names, the JSON kinds of its values and
some values themselves; the key keeps all of these and blanks only the values whose content
Cedar's check cannot see:

- the id of a uid (the entity's own, its parents', an ``__entity`` reference at the top of an
  attribute): any string is an id, except for enumerated entity types and actions, whose ids
  the schema lists (kept);
- a top-level attribute's string when the schema declares it ``String``, and its integer
  (already within 64 bits: the entity's walk refuses others) when it declares ``Long``.

Everything else is kept as written: strings at any other position (a schema's ``ipaddr``,
``decimal``, ``datetime`` or ``duration`` attribute reads a bare string as the constructor's
argument, and refuses one that does not parse), nested records and sets, tags, extension
escapes. Without a schema Cedar reads no string as anything but a string: then every top-level
string and integer is blanked. When the schema exists but its rendering could not be read
(``shape`` None) there is no key: every entity goes to Cedar.

tests/security/test_entity_kinds.py holds the claim against Cedar on generated entities: two
entities with one key are accepted or refused together.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

from verdict.model import JsonObject
from verdict.policy.store_settings import is_action_type
from verdict.schema_shape import EntityRef, Primitive, RecordType, SchemaShape

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_STRING, _LONG, _ENTITY, _ANY = "string", "long", "entity", "any"
_BLANK_STRINGS = (_STRING, _ANY)
_BLANK_REFS = (_ENTITY, _ANY)


class EntityKinds:
    """Keys for one store's entities (its schema's shape, or no schema at all)."""

    def __init__(self, has_schema: bool, shape: SchemaShape | None) -> None:
        self._enabled = shape is not None or not has_schema
        self._enums = frozenset(shape.enums) if shape is not None else frozenset()
        # Entity type -> attribute name -> what of its value may be blanked.
        self._blankable: Mapping[str, Mapping[str, str]] = (
            {name: _blankable(record) for name, record in shape.attributes.items()}
            if shape is not None
            else {}
        )
        self._schemaless = not has_schema
        self._keeps_id: dict[str, bool] = {}  # type -> whether its ids are kept
        # Entity type -> (whether its ids are kept, its blankable attributes; None: all of
        # them, without a schema), or None for an action type (always checked).
        self._plans: dict[str, tuple[bool, Mapping[str, str] | None] | None] = {}

    def key(self, entity: JsonObject) -> Hashable | None:
        """The entity's kind (None: no key, Cedar must see it). ``entity`` has passed
        ``cedar_json.check_entity``: canonical uids, no escape keys beside others."""
        if not self._enabled:
            return None
        uid = entity["uid"]
        inner = uid.get("__entity", uid)
        type_ = inner["type"]
        plan = self._plans[type_] if type_ in self._plans else self._plan(type_)
        if plan is None:  # the schema lists actions and their groups: always checked
            return None
        keeps_id, blankable = plan
        # A flat list: the type and the kept or blanked id, each parent's (type, id), None,
        # then (name, the value's exact type, its kept or blanked form) per attribute, then
        # the tags. The exact type keeps True apart from 1 (equal in Python).
        key: list[Any] = [type_, inner["id"] if keeps_id else ""]
        for parent in entity["parents"]:
            key.append(self._uid(parent))
        key.append(None)
        keeps_ids = self._keeps_id
        for name, value in entity["attrs"].items():
            what = _ANY if blankable is None else blankable.get(name)
            kind = type(value)
            if kind is str:  # most values: blanked here, without a call
                shown = "" if what in _BLANK_STRINGS else value
            elif kind is dict and "__entity" in value and what in _BLANK_REFS:
                # A reference, the next most common: as _uid reads it, without the call.
                inner = value["__entity"]
                ref_type = inner["type"]
                keeps = keeps_ids.get(ref_type)
                if keeps is None:
                    keeps = self._keeps(ref_type)
                shown = (ref_type, inner["id"] if keeps else "")
            else:
                shown = self._blank(value, what)
            key += (name, kind, shown)
        tags = entity.get("tags")
        key.append(None if tags is None else _ENCODER.encode(tags))
        return tuple(key)

    def _plan(self, type_: str) -> tuple[bool, Mapping[str, str] | None] | None:
        plan = None
        if not is_action_type(type_):
            # Without a schema every top-level attribute may be blanked (None).
            blankable = None if self._schemaless else self._blankable.get(type_, {})
            plan = (self._keeps(type_), blankable)
        self._plans[type_] = plan
        return plan

    def _keeps(self, type_: str) -> bool:
        keeps = self._keeps_id.get(type_)
        if keeps is None:
            keeps = self._keeps_id[type_] = type_ in self._enums or is_action_type(type_)
        return keeps

    def _uid(self, uid: Any) -> tuple[str, str]:
        inner = uid.get("__entity", uid)
        type_ = inner["type"]
        return (type_, inner["id"]) if self._keeps(type_) else (type_, "")

    def _blank(self, value: Any, what: str | None) -> Hashable:
        """The kept or blanked form of a value that is not a string."""
        kind = type(value)
        if kind is int:  # never bool: type() is exact
            return 0 if what in (_LONG, _ANY) else value
        if kind is bool:
            return bool(value)
        if value is None:
            return None
        if kind is dict and "__entity" in value and what in _BLANK_REFS:
            return self._uid(value["__entity"])
        return _ENCODER.encode(value)


def _blankable(record: RecordType) -> dict[str, str]:
    found = {}
    for name, attribute in record.attributes.items():
        declared = attribute.type
        if isinstance(declared, Primitive) and declared.name == "String":
            found[name] = _STRING
        elif isinstance(declared, Primitive) and declared.name == "Long":
            found[name] = _LONG
        elif isinstance(declared, EntityRef):
            found[name] = _ENTITY
    return found
