"""The shape of a Cedar schema: entity types, actions and the types of their contexts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from verdict.model import EntityUid

PRIMITIVES = frozenset({"Bool", "Long", "String"})
EXTENSIONS = frozenset({"ipaddr", "decimal", "datetime", "duration"})


@dataclass(frozen=True)
class Primitive:
    """Bool, Long or String."""

    name: str


@dataclass(frozen=True)
class Extension:
    """An extension type: ipaddr, decimal, datetime or duration."""

    name: str


@dataclass(frozen=True)
class EntityRef:
    """A reference to an entity of the (fully qualified) type ``name``."""

    name: str


@dataclass(frozen=True)
class SetOf:
    """A set whose elements all have type ``element``."""

    element: CedarType


@dataclass(frozen=True)
class Attribute:
    """One attribute of a record type."""

    type: CedarType
    required: bool = True


@dataclass(frozen=True)
class RecordType:
    """A record: its declared attributes (no others are allowed in a request's context)."""

    attributes: Mapping[str, Attribute] = field(default_factory=dict)


CedarType = Primitive | Extension | EntityRef | SetOf | RecordType


@dataclass(frozen=True)
class ActionShape:
    """What one action applies to: principal and resource types (empty when the action has no
    ``appliesTo``: it only groups others and no request may name it) and its context type."""

    uid: EntityUid
    principals: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    context: RecordType = RecordType()


@dataclass(frozen=True)
class SchemaShape:
    """Declared entity types (enumerated ones with their ids) and actions by uid."""

    entity_types: frozenset[str]
    actions: Mapping[EntityUid, ActionShape]
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Declared attributes of each entity type (types declared without any are absent).
    attributes: Mapping[str, RecordType] = field(default_factory=dict)


class ShapeSyntaxError(ValueError):
    """The text is not the Cedar schema syntax this parser reads."""
