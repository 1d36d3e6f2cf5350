"""Cedar schema syntax read into declarations with names as written (resolve.py resolves them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from verdict.schema_shape.types import ShapeSyntaxError

# Tokens: names, strings, punctuation ("::" is one token).
_TOKEN = re.compile(
    r"""\s+|//[^\r\n]*|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<string>"(?:[^"\\]|\\.)*")"""
    r"""|(?P<punct>::|[{}\[\]()<>,;:=?@])""",
    re.DOTALL,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'}
_UNICODE_ESCAPE = re.compile(r"u\{([0-9a-fA-F]{1,6})\}")
_MAX_CODE_POINT = 0x10FFFF


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
        if code is not None and int(code.group(1), 16) <= _MAX_CODE_POINT:
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
class Named:
    """A type by name (``Long``, ``Ctx``, ``NS::User``, ``__cedar::String``)."""

    path: str


@dataclass(frozen=True)
class SetExpr:
    """``Set<element>``."""

    element: Expr


@dataclass(frozen=True)
class RecordExpr:
    """``{ name: type, optional?: type }``: (name, type, required) in written order."""

    attributes: tuple[tuple[str, Expr, bool], ...]


Expr = Named | SetExpr | RecordExpr


@dataclass
class Declarations:
    """Everything declared, by fully qualified name, each with the namespace it was written in."""

    common: dict[str, tuple[str, Expr]] = field(default_factory=dict)
    entities: set[str] = field(default_factory=set)
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    actions: list[tuple[str, str, tuple[str, ...], tuple[str, ...], Expr | None]] = field(
        default_factory=list
    )
    # Each action's parent actions as declared: (action type, id) -> [(action type, id)].
    action_parents: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    # Entity types' attribute and tag types: (namespace, first type's name, what, type).
    entity_types: list[tuple[str, str, str, Expr]] = field(default_factory=list)
    # Each entity type's attributes, by fully qualified name: (namespace, record type).
    entity_attributes: dict[str, tuple[str, Expr]] = field(default_factory=dict)


_BUILTIN = "__cedar"


def lookup(found: Declarations, namespace: str, path: str) -> tuple[str, str]:
    """What a type name written in ``namespace`` names, as Cedar resolves it: ("common", name)
    or ("entity", name), the namespace's own before the empty namespace's, else ("builtin",
    name) (``__cedar::`` names always)."""
    prefix, _, base = path.rpartition("::")
    if prefix == _BUILTIN:
        return "builtin", base
    for candidate in [path] if prefix else [qualify(namespace, path), path]:
        if candidate in found.common:
            return "common", candidate
        if candidate in found.entities:
            return "entity", candidate
    return "builtin", path


def qualify(namespace: str, name: str) -> str:
    return f"{namespace}::{name}" if namespace else name


class Parser:
    """Recursive descent over the token list; fills a Declarations."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.at = 0
        self.found = Declarations()

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

    def kind(self, offset: int = 0) -> str:
        index = self.at + offset
        return self.tokens[index][0] if index < len(self.tokens) else ""

    def name(self) -> str:
        if self.kind() != "name":
            raise ShapeSyntaxError(f"expected a name, found {self.peek()!r}")
        return self.take()

    def string(self) -> str:
        if self.kind() != "string":
            raise ShapeSyntaxError(f"expected a string, found {self.peek()!r}")
        return unquote(self.take())

    def path(self) -> str:
        parts = [self.name()]
        while self.peek() == "::" and self.kind(1) == "name":
            self.take("::")
            parts.append(self.name())
        return "::".join(parts)

    def parse(self) -> Declarations:
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
                self.string()
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
            self.found.common[qualify(namespace, name)] = (namespace, self.type_expr())
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
        qualified = [qualify(namespace, n) for n in names]
        self.found.entities.update(qualified)
        if self.peek() == "enum":
            self.take()
            self.take("[")
            ids = []
            while self.peek() != "]":
                ids.append(self.string())
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
        shown = ", ".join(qualified)
        if self.peek() == "{":
            what = f"the attributes of {shown}"
            attributes = self.type_expr()
            self.found.entity_types.append((namespace, names[0], what, attributes))
            for name in qualified:
                self.found.entity_attributes[name] = (namespace, attributes)
        if self.peek() == "tags":
            self.take()
            what = f"the tags of {shown}"
            self.found.entity_types.append((namespace, names[0], what, self.type_expr()))
        self.take(";")

    def action_name(self) -> str:
        return self.string() if self.kind() == "string" else self.name()

    def action(self, namespace: str) -> None:
        names = [self.action_name()]
        while self.peek() == ",":
            self.take()
            names.append(self.action_name())
        parents: list[tuple[str, str]] = []
        if self.peek() == "in":
            self.take()
            parents = self.action_refs(namespace)
        for name in names:
            self.found.action_parents[(qualify(namespace, "Action"), name)] = parents
        principals: list[str] = []
        resources: list[str] = []
        context: Expr | None = None
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

    def action_refs(self, namespace: str) -> list[tuple[str, str]]:
        """The parent actions named: ``Action::"x"`` (this namespace's), ``NS::Action::"x"``,
        or a plain name or string (this namespace's)."""
        refs: list[tuple[str, str]] = []
        bracketed = self.peek() == "["
        if bracketed:
            self.take()
        while self.peek() not in ("]", ";", "appliesTo", ""):
            if self.kind() == "name":
                path = self.path()
                if self.peek() == "::":
                    self.take()
                    kind = qualify(namespace, path) if path == "Action" else path
                    refs.append((kind, self.string()))
                else:
                    refs.append((qualify(namespace, "Action"), path))
            else:
                refs.append((qualify(namespace, "Action"), unquote(self.take())))
            if self.peek() == ",":
                self.take()
            if not bracketed:
                break
        if bracketed:
            self.take("]")
        return refs

    def type_expr(self) -> Expr:
        if self.peek() == "{":
            return self.record()
        name = self.path()
        if name == "Set" and self.peek() == "<":
            self.take("<")
            element = self.type_expr()
            self.take(">")
            return SetExpr(element)
        return Named(name)

    def record(self) -> RecordExpr:
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
        return RecordExpr(tuple(attributes))
