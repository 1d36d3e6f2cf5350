"""Cedar's name resolution over parsed declarations, giving the schema's shape."""

from __future__ import annotations

from verdict.model import EntityUid
from verdict.schema_shape.syntax import (
    Declarations,
    Expr,
    Parser,
    RecordExpr,
    SetExpr,
    lookup,
    qualify,
)
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


def parse_shape(text: str) -> SchemaShape:
    """The shape of a schema written in Cedar syntax (cedarpy's rendering of any schema)."""
    found = Parser(text).parse()
    resolver = _Resolver(found)
    actions = {}
    for namespace, name, principals, resources, context in found.actions:
        uid = EntityUid(qualify(namespace, "Action"), name)
        record = resolver.resolve(namespace, context) if context is not None else RecordType()
        if not isinstance(record, RecordType):
            raise ShapeSyntaxError(f"the context of {uid} is not a record")
        actions[uid] = ActionShape(
            uid,
            tuple(resolver.entity(namespace, p) for p in principals),
            tuple(resolver.entity(namespace, r) for r in resources),
            record,
        )
    attributes = {}
    for name, (namespace, expr) in found.entity_attributes.items():
        record = resolver.resolve(namespace, expr)
        if not isinstance(record, RecordType):
            raise ShapeSyntaxError(f"the attributes of {name} are not a record")
        attributes[name] = record
    return SchemaShape(frozenset(found.entities), actions, dict(found.enums), attributes)


class _Resolver:
    """Cedar's name resolution for the declarations of one schema."""

    def __init__(self, found: Declarations) -> None:
        self.found = found
        self.resolving: set[str] = set()

    def entity(self, namespace: str, path: str) -> str:
        if "::" in path:
            return path
        qualified = qualify(namespace, path)
        return qualified if qualified in self.found.entities else path

    def resolve(self, namespace: str, expr: Expr) -> CedarType:
        if isinstance(expr, SetExpr):
            return SetOf(self.resolve(namespace, expr.element))
        if isinstance(expr, RecordExpr):
            return RecordType(
                {key: Attribute(self.resolve(namespace, t), req) for key, t, req in expr.attributes}
            )
        return self.named(namespace, expr.path)

    def named(self, namespace: str, path: str) -> CedarType:
        kind, name = lookup(self.found, namespace, path)
        if kind == "common":
            return self.common(name)
        if kind == "entity":
            return EntityRef(name)
        return _builtin(name)

    def common(self, name: str) -> CedarType:
        if name in self.resolving:
            raise ShapeSyntaxError(f"common type {name} refers to itself")
        self.resolving.add(name)
        namespace, expr = self.found.common[name]
        try:
            return self.resolve(namespace, expr)
        finally:
            self.resolving.discard(name)


def _builtin(name: str) -> CedarType:
    if name in PRIMITIVES:
        return Primitive(name)
    if name in EXTENSIONS:
        return Extension(name)
    raise ShapeSyntaxError(f"unknown type {name}")
