"""The shape of a Cedar schema (entity types, actions, context types), read from the normalized
Cedar syntax cedarpy renders any schema in, so that errors can name what a request gets wrong.

cedarpy offers no schema-to-JSON; ``str(schema)`` renders a schema given in either syntax in one
normalized form: one declaration per entity type and per action, every list bracketed, string
escapes as Cedar writes them, no comments. This module parses that form (and Cedar syntax in
general, comments included) and resolves names as Cedar does: a common type of the namespace,
then an entity type of it, then the same two of the empty namespace, then a built-in type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from verdict.model import EntityUid

PRIMITIVES = frozenset({"Bool", "Long", "String"})
EXTENSIONS = frozenset({"ipaddr", "decimal", "datetime", "duration"})
_BUILTIN = "__cedar"


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


class ShapeSyntaxError(ValueError):
    """The text is not the Cedar schema syntax this parser reads."""


# --- Tokens: names, strings, punctuation ("::" is one token).
_TOKEN = re.compile(
    r"""\s+|//[^\n]*|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<string>"(?:[^"\\]|\\.)*")"""
    r"""|(?P<punct>::|[{}\[\]()<>,;:=?@])""",
    re.DOTALL,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'}
_UNICODE_ESCAPE = re.compile(r"u\{([0-9a-fA-F]{1,6})\}")


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    index = 0
    while index < len(text):
        match = _TOKEN.match(text, index)
        if match is None:
            raise ShapeSyntaxError(f"unexpected character at {index}")
        index = match.end()
        kind = match.lastgroup
        if kind is not None:
            yield kind, match.group()


def unquote(literal: str) -> str:
    """The value of a Cedar string literal (``"..."`` with Cedar's escapes)."""
    body, out, index = literal[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        code = _UNICODE_ESCAPE.match(body, index + 1)
        if code is not None:
            out.append(chr(int(code.group(1), 16)))
            index = code.end()
        elif body[index + 1 : index + 2] in _ESCAPES:
            out.append(_ESCAPES[body[index + 1]])
            index += 2
        else:
            raise ShapeSyntaxError("unknown escape in a string")
    return "".join(out)


# Parsed but not yet resolved: type expressions keep the names as written.
@dataclass(frozen=True)
class _Named:
    path: str


@dataclass(frozen=True)
class _SetExpr:
    element: _Expr


@dataclass(frozen=True)
class _RecordExpr:
    attributes: tuple[tuple[str, _Expr, bool], ...]


_Expr = _Named | _SetExpr | _RecordExpr


@dataclass
class _Declarations:
    """Everything declared, by fully qualified name, each with the namespace it was written in."""

    common: dict[str, tuple[str, _Expr]] = field(default_factory=dict)
    entities: set[str] = field(default_factory=set)
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    actions: list[tuple[str, str, tuple[str, ...], tuple[str, ...], _Expr | None]] = field(
        default_factory=list
    )


def _qualify(namespace: str, name: str) -> str:
    return f"{namespace}::{name}" if namespace else name


class _Parser:
    """Recursive descent over the token list; fills a _Declarations."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.at = 0
        self.found = _Declarations()

    def peek(self, offset: int = 0) -> str:
        index = self.at + offset
        return self.tokens[index][1] if index < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise ShapeSyntaxError("unexpected end of schema")
        value = self.tokens[self.at][1]
        if expected is not None and value != expected:
            raise ShapeSyntaxError(f"expected {expected!r}, found {value!r}")
        self.at += 1
        return value

    def kind(self) -> str:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else ""

    def name(self) -> str:
        if self.kind() != "name":
            raise ShapeSyntaxError(f"expected a name, found {self.peek()!r}")
        return self.take()

    def path(self) -> str:
        parts = [self.name()]
        while self.peek() == "::" and self.tokens[self.at + 1][0] == "name":
            self.take("::")
            parts.append(self.name())
        return "::".join(parts)

    def parse(self) -> _Declarations:
        while self.at < len(self.tokens):
            self.annotations()
            if self.peek() == "namespace":
                self.take()
                namespace = self.path()
                self.take("{")
                while self.peek() != "}":
                    self.declaration(namespace)
                self.take("}")
            else:
                self.declaration("")
        return self.found

    def annotations(self) -> None:
        while self.peek() == "@":
            self.take()
            self.name()
            if self.peek() == "(":
                self.take()
                self.take()  # the annotation's string
                self.take(")")

    def declaration(self, namespace: str) -> None:
        self.annotations()
        keyword = self.take()
        if keyword == "entity":
            self.entity(namespace)
        elif keyword == "action":
            self.action(namespace)
        elif keyword == "type":
            name = self.name()
            self.take("=")
            self.found.common[_qualify(namespace, name)] = (namespace, self.type_expr())
            self.take(";")
        else:
            raise ShapeSyntaxError(f"unexpected {keyword!r}")

    def listed(self) -> list[str]:
        """``X`` or ``[X, Y]`` of paths."""
        if self.peek() != "[":
            return [self.path()]
        self.take("[")
        items = []
        while self.peek() != "]":
            items.append(self.path())
            if self.peek() == ",":
                self.take()
        self.take("]")
        return items

    def entity(self, namespace: str) -> None:
        names = [self.name()]
        while self.peek() == ",":
            self.take()
            names.append(self.name())
        qualified = [_qualify(namespace, n) for n in names]
        self.found.entities.update(qualified)
        if self.peek() == "enum":
            self.take()
            self.take("[")
            ids = []
            while self.peek() != "]":
                ids.append(unquote(self.take()))
                if self.peek() == ",":
                    self.take()
            self.take("]")
            for name in qualified:
                self.found.enums[name] = tuple(ids)
        if self.peek() == "in":
            self.take()
            self.listed()
        if self.peek() == "=":
            self.take()
        if self.peek() == "{":
            self.type_expr()
        if self.peek() == "tags":
            self.take()
            self.type_expr()
        self.take(";")

    def action_name(self) -> str:
        return unquote(self.take()) if self.kind() == "string" else self.name()

    def action(self, namespace: str) -> None:
        names = [self.action_name()]
        while self.peek() == ",":
            self.take()
            names.append(self.action_name())
        if self.peek() == "in":
            self.take()
            self.action_refs()
        principals: list[str] = []
        resources: list[str] = []
        context: _Expr | None = None
        if self.peek() == "appliesTo":
            self.take()
            self.take("{")
            while self.peek() != "}":
                part = self.take()
                self.take(":")
                if part == "context":
                    context = self.type_expr()
                elif part == "principal":
                    principals = self.listed()
                elif part == "resource":
                    resources = self.listed()
                else:
                    raise ShapeSyntaxError(f"unexpected {part!r} in appliesTo")
                if self.peek() == ",":
                    self.take()
            self.take("}")
        self.take(";")
        for name in names:
            self.found.actions.append(
                (namespace, name, tuple(principals), tuple(resources), context)
            )

    def action_refs(self) -> None:
        bracketed = self.peek() == "["
        if bracketed:
            self.take()
        while self.peek() not in ("]", ";", "appliesTo", ""):
            if self.kind() == "name":
                self.path()
                if self.peek() == "::":
                    self.take()
                    self.take()  # the action's id string
            else:
                self.take()  # a plain action name as a string
            if self.peek() == ",":
                self.take()
            if not bracketed:
                break
        if bracketed:
            self.take("]")

    def type_expr(self) -> _Expr:
        if self.peek() == "{":
            return self.record()
        name = self.path()
        if name == "Set" and self.peek() == "<":
            self.take("<")
            element = self.type_expr()
            self.take(">")
            return _SetExpr(element)
        return _Named(name)

    def record(self) -> _RecordExpr:
        self.take("{")
        attributes = []
        while self.peek() != "}":
            self.annotations()
            raw = self.take()
            key = unquote(raw) if raw.startswith('"') else raw
            required = self.peek() != "?"
            if not required:
                self.take("?")
            self.take(":")
            attributes.append((key, self.type_expr(), required))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return _RecordExpr(tuple(attributes))


def parse_shape(text: str) -> SchemaShape:
    """The shape of a schema written in Cedar syntax (cedarpy's rendering of any schema)."""
    found = _Parser(text).parse()
    resolver = _Resolver(found)
    actions = {}
    for namespace, name, principals, resources, context in found.actions:
        uid = EntityUid(_qualify(namespace, "Action"), name)
        record = resolver.resolve(namespace, context) if context is not None else RecordType()
        if not isinstance(record, RecordType):
            raise ShapeSyntaxError(f"the context of {uid} is not a record")
        actions[uid] = ActionShape(
            uid,
            tuple(resolver.entity(namespace, p) for p in principals),
            tuple(resolver.entity(namespace, r) for r in resources),
            record,
        )
    return SchemaShape(frozenset(found.entities), actions, dict(found.enums))


class _Resolver:
    """Cedar's name resolution for the declarations of one schema."""

    def __init__(self, found: _Declarations) -> None:
        self.found = found
        self.resolving: set[str] = set()

    def entity(self, namespace: str, path: str) -> str:
        if "::" in path:
            return path
        qualified = _qualify(namespace, path)
        return qualified if qualified in self.found.entities else path

    def resolve(self, namespace: str, expr: _Expr) -> CedarType:
        if isinstance(expr, _SetExpr):
            return SetOf(self.resolve(namespace, expr.element))
        if isinstance(expr, _RecordExpr):
            return RecordType(
                {key: Attribute(self.resolve(namespace, t), req) for key, t, req in expr.attributes}
            )
        return self.named(namespace, expr.path)

    def named(self, namespace: str, path: str) -> CedarType:
        prefix, _, base = path.rpartition("::")
        if prefix == _BUILTIN:
            return _builtin(base)
        candidates = [path] if prefix else [_qualify(namespace, path), path]
        for candidate in candidates:
            if candidate in self.found.common:
                return self.common(candidate)
            if candidate in self.found.entities:
                return EntityRef(candidate)
        return _builtin(path)

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
