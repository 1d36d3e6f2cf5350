"""The shape of a Cedar schema (entity types, actions, context types), read from the normalized
Cedar syntax cedarpy renders any schema in, so that errors can name what a request gets wrong.

cedarpy offers no schema-to-JSON; ``str(schema)`` renders a schema given in either syntax in one
normalized form: one declaration per entity type and per action, every list bracketed, string
escapes as Cedar writes them, no comments. This module parses that form (and Cedar syntax in
general, comments included) and resolves names as Cedar does: a common type of the namespace,
then an entity type of it, then the same two of the empty namespace, then a built-in type.
"""

from verdict.schema_shape.resolve import parse_shape
from verdict.schema_shape.syntax import unquote
from verdict.schema_shape.types import (
    EXTENSIONS,
    PRIMITIVES,
    ActionShape,
    Attribute,
    CedarType,
    EntityRef,
    Extension,
    Primitive,
    RecordType,
    SchemaShape,
    SetOf,
    ShapeSyntaxError,
)

__all__ = [
    "EXTENSIONS",
    "PRIMITIVES",
    "ActionShape",
    "Attribute",
    "CedarType",
    "EntityRef",
    "Extension",
    "Primitive",
    "RecordType",
    "SchemaShape",
    "SetOf",
    "ShapeSyntaxError",
    "parse_shape",
    "unquote",
]
