"""The schema shape read from Cedar's rendering, checked against Cedar itself: for generated
schemas (in both syntaxes) and requests, the shape finds a problem exactly when Cedar refuses."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from verdict import cedar
from verdict.engine.request_problems import explain_no_decision, request_problems
from verdict.model import AuthorizationRequest, EntityUid
from verdict.policy.loader import load_store
from verdict.schema_shape import (
    ActionShape,
    Attribute,
    EntityRef,
    Extension,
    Primitive,
    RecordType,
    SchemaShape,
    SetOf,
    ShapeSyntaxError,
    parse_shape,
    unquote,
)

LENDING = ROOT / "policies" / "lending" / "schema.cedarschema"


def shape_of(text: str, *, is_json: bool = False) -> SchemaShape:
    """The shape of a schema as Cedar renders it."""
    return parse_shape(cedar.schema_text(cedar.parse_schema(text, is_json=is_json)))


def test_sample_store_schema() -> None:
    """The lending schema: its six entity types, nine actions, and the shared context type."""
    shape = shape_of(LENDING.read_text())
    assert shape.entity_types == {"Borrower", "Document", "Employee", "Loan", "Partner", "Role"}
    assert len(shape.actions) == 9
    view = shape.actions[EntityUid("Action", "view")]
    assert view.principals == ("Borrower", "Employee")
    assert view.resources == ("Loan",)
    assert view.context == RecordType(
        {
            "mfa": Attribute(Primitive("Bool")),
            "now": Attribute(Extension("datetime")),
            "source_ip": Attribute(Extension("ipaddr"), required=False),
        }
    )
    assert shape.actions[EntityUid("Action", "approve")].principals == ("Employee",)
    # The file as written (comments, unquoted names) reads the same as Cedar's rendering.
    assert parse_shape(LENDING.read_text()) == shape


VARIED = r"""
@doc("top")
namespace App::Sub {
  // a comment
  @doc("ctx") type Ctx = { "weird key": Long, "a\"b"?: Set<String>,
    addr: { city: String, zip?: Long }, t: __cedar::String, d: decimal, dt: datetime,
    dur: duration, ip: ipaddr, ref: User, ext: Other::Thing };
  type Alias = Bool;
  entity User, Admin in [Group, Other::Org] = { name: String, flag: Alias } tags Set<String>;
  entity Group;
  entity Color enum ["red", "gr\"een"];
  @doc("act")
  action "read", write in [Action::"all", "grp"] appliesTo {
    principal: [User, Admin], resource: Group, context: Ctx };
  action "all";
  action grp;
  action "noctx" appliesTo { principal: User, resource: [Color] };
  action "ctx inline" appliesTo { principal: User, resource: User,
    context: { @doc("x") mfa: Bool, rec: { x: Set<Set<Long>> } } };
}
namespace Other { entity Org; entity Thing; type T = String; action og; }
type ipaddr = __cedar::Long;
entity Long;
entity Top = { n: Long, i: ipaddr };
action "top\n\u{1F600}" in [Other::Action::"og"] appliesTo {
  principal: Top, resource: App::Sub::User, context: { n: Long, i: ipaddr, s: __cedar::Long } };
"""


def test_varied_schema_features() -> None:
    """Namespaces, multiple names, enums, tags, annotations, quoted and escaped names, common
    types (also shadowing built-ins), action groups and actions without appliesTo."""
    shape = shape_of(VARIED)
    assert parse_shape(VARIED) == shape
    assert shape.enums == {"App::Sub::Color": ("red", 'gr"een')}
    assert {"App::Sub::User", "App::Sub::Admin", "Other::Org", "Long", "Top"} <= shape.entity_types
    read = shape.actions[EntityUid("App::Sub::Action", "read")]
    assert shape.actions[EntityUid("App::Sub::Action", "write")].context == read.context
    assert read.principals == ("App::Sub::User", "App::Sub::Admin")
    attributes = read.context.attributes
    # The empty namespace declares an entity type Long: it wins over the built-in everywhere.
    assert attributes["weird key"] == Attribute(EntityRef("Long"))
    assert attributes['a"b'] == Attribute(SetOf(Primitive("String")), required=False)
    assert attributes["addr"].type == RecordType(
        {"city": Attribute(Primitive("String")), "zip": Attribute(EntityRef("Long"), False)}
    )
    assert attributes["ref"].type == EntityRef("App::Sub::User")
    assert attributes["ext"].type == EntityRef("Other::Thing")
    assert attributes["dur"].type == Extension("duration")
    assert shape.actions[EntityUid("App::Sub::Action", "all")] == ActionShape(
        EntityUid("App::Sub::Action", "all")
    )
    top = shape.actions[EntityUid("Action", "top\n\U0001f600")]
    # An entity type named Long wins over the built-in; a common type named ipaddr too.
    assert top.context.attributes == {
        "n": Attribute(EntityRef("Long")),
        "i": Attribute(Primitive("Long")),
        "s": Attribute(Primitive("Long")),
    }


def test_json_schemas_render_to_the_same_shape() -> None:
    """A schema written as JSON (rendered with ``__cedar::`` names) has the same shape."""
    text = json.dumps(
        {
            "NS": {
                "entityTypes": {"U": {"shape": {"type": "Record", "attributes": {}}}},
                "actions": {
                    "x": {
                        "appliesTo": {
                            "principalTypes": ["U"],
                            "resourceTypes": ["NS::U"],
                            "context": {"type": "Rec"},
                        }
                    }
                },
                "commonTypes": {
                    "Rec": {
                        "type": "Record",
                        "attributes": {
                            "b": {"type": "Boolean"},
                            "e": {"type": "Entity", "name": "U", "required": False},
                            "s": {
                                "type": "Set",
                                "element": {"type": "EntityOrCommon", "name": "U"},
                            },
                            "x": {"type": "Extension", "name": "decimal"},
                        },
                    }
                },
            }
        }
    )
    shape = shape_of(text, is_json=True)
    assert shape == shape_of(
        "namespace NS { entity U; type Rec = { b: Bool, e?: U, s: Set<U>, x: decimal };"
        "action x appliesTo { principal: U, resource: NS::U, context: Rec }; }"
    )


@pytest.mark.parametrize(
    ("literal", "value"),
    [(r'"a\"b"', 'a"b'), (r'"\\\n\t\r\0\'"', "\\\n\t\r\0'"), (r'"\u{1F600}x"', "\U0001f600x")],
)
def test_unquote(literal: str, value: str) -> None:
    """Cedar string literals read back exactly."""
    assert unquote(literal) == value


@pytest.mark.parametrize(
    "text",
    [
        "entity;",
        "entity A = { x: };",
        'entity A = { "x\\q": Long };',
        "action a appliesTo { nope: A };",
        "action a appliesTo { principal: A, resource: A, context: Y };",
        "type X = { a: X }; action a appliesTo { principal: A, resource: A, context: X };",
        "type X = Long; action a appliesTo { principal: A, resource: A, context: X };",
        "entity A # B;",
        "entity A",
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    """Text that is not a schema raises ShapeSyntaxError (the snapshot then keeps generic
    messages), never another exception."""
    with pytest.raises(ShapeSyntaxError):
        parse_shape(text)


SOUP = [
    "namespace", "N", "::", "{", "}", "entity", "E", "in", "[", "]", ",", ";", "=", "tags",
    "enum", '"a"', '"\\u{110000}"', '"\\q"', "action", "appliesTo", "principal", "resource",
    "context", ":", "type", "T", "Set", "<", ">", "?", "@", "doc", "(", ")", "__cedar", "Long",
    "//", "\n", "#",
]  # fmt: skip


# --- Differential: generated schemas and requests, Cedar as the oracle.
NAMES = ["User", "Doc", "Group", "Item", "Team", "Role", "Org", "Loan"]
EXTENSIONS = {
    "ipaddr": ["10.0.0.1", "::1", "10.0.0.0/8"],
    "decimal": ["1.5", "-0.0001"],
    "datetime": ["2025-03-04", "2025-03-04T10:00:00Z"],
    "duration": ["1h30m", "-2d"],
}
WRONG = [1, "s", True, [], {}, None, {"type": "Nope", "id": "x"}, "not-an-extension", [1]]


class Generator:
    """A random schema (kept as plain structures) written in both syntaxes, and requests."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.namespaces = self.rng.choice([[""], ["Ns"], ["", "A::B"]])
        self.entities: list[tuple[str, str]] = []  # (namespace, name)
        self.enums: dict[tuple[str, str], list[str]] = {}
        self.common: list[tuple[str, str, Any]] = []
        self.actions: list[tuple[str, str, list[str], list[str], Any]] = []
        # Cedar refuses a name in a namespace that shadows one of the empty namespace.
        names = self.rng.sample(NAMES, len(NAMES))
        for namespace in self.namespaces:
            for name in [names.pop() for _ in range(self.rng.randint(2, 4))]:
                self.entities.append((namespace, name))
                if self.rng.random() < 0.25:
                    self.enums[(namespace, name)] = ["a", "b c"]
        for index in range(self.rng.randint(0, 3)):
            namespace = self.rng.choice(self.namespaces)
            self.common.append((namespace, f"T{index}", self.record(2)))
        for index in range(self.rng.randint(1, 4)):
            namespace = self.rng.choice(self.namespaces)
            context = self.record(3)
            usable = [c for c in self.common if c[0] in ("", namespace)]
            if usable and self.rng.random() < 0.4:
                context = ("common", self.rng.choice(usable))
            self.actions.append((namespace, f"act {index}", self.scope(), self.scope(), context))

    def scope(self) -> list[str]:
        return [self.qualified(e) for e in self.rng.sample(self.entities, self.rng.randint(1, 2))]

    @staticmethod
    def qualified(entity: tuple[str, str]) -> str:
        return f"{entity[0]}::{entity[1]}" if entity[0] else entity[1]

    def type(self, depth: int) -> Any:
        roll = self.rng.random()
        if roll < 0.35 or depth == 0:
            return ("prim", self.rng.choice(["Bool", "Long", "String"]))
        if roll < 0.5:
            return ("ext", self.rng.choice(list(EXTENSIONS)))
        if roll < 0.65:
            return ("entity", self.qualified(self.rng.choice(self.entities)))
        if roll < 0.8:
            return ("set", self.type(depth - 1))
        return self.record(depth - 1)

    def record(self, depth: int) -> Any:
        count = self.rng.randint(0, 3)
        keys = self.rng.sample(["a", "b", "mfa", "x y", 'q"t', "deep"], count)
        return ("record", {k: (self.type(depth), self.rng.random() < 0.7) for k in keys})

    # Cedar syntax
    def cedar_type(self, t: Any) -> str:
        kind, body = t
        if kind == "prim":
            return body  # type: ignore[no-any-return]
        if kind == "ext":
            return f"__cedar::{body}"
        if kind == "entity":
            return body  # type: ignore[no-any-return]
        if kind == "set":
            return f"Set<{self.cedar_type(body)}>"
        if kind == "common":
            return self.qualified((body[0], body[1]))
        attrs = ", ".join(
            f"{json.dumps(k)}{'' if req else '?'}: {self.cedar_type(v)}"
            for k, (v, req) in body.items()
        )
        return "{" + attrs + "}"

    def cedar_text(self) -> str:
        parts = []
        for namespace in self.namespaces:
            body = []
            for ns, name in self.entities:
                if ns == namespace:
                    ids = self.enums.get((ns, name))
                    enum = f" enum [{', '.join(json.dumps(i) for i in ids)}]" if ids else ""
                    body.append(f"entity {name}{enum};")
            for ns, name, t in self.common:
                if ns == namespace:
                    body.append(f"type {name} = {self.cedar_type(t)};")
            for ns, name, principals, resources, context in self.actions:
                if ns == namespace:
                    who, what = ", ".join(principals), ", ".join(resources)
                    scope = f"principal: [{who}], resource: [{what}]"
                    body.append(
                        f"action {json.dumps(name)} appliesTo "
                        f"{{ {scope}, context: {self.cedar_type(context)} }};"
                    )
            text = "\n".join(body)
            parts.append(f"namespace {namespace} {{ {text} }}" if namespace else text)
        return "\n".join(parts)

    # JSON syntax
    def json_type(self, t: Any, required: bool | None = None) -> Any:
        kind, body = t
        result: dict[str, Any]
        if kind == "prim":
            result = {"type": "Boolean" if body == "Bool" else body}
        elif kind == "ext":
            result = {"type": "Extension", "name": body}
        elif kind == "entity":
            result = {"type": "Entity", "name": body}
        elif kind == "set":
            result = {"type": "Set", "element": self.json_type(body)}
        elif kind == "common":
            result = {"type": self.qualified((body[0], body[1]))}
        else:
            result = {
                "type": "Record",
                "attributes": {k: self.json_type(v, req) for k, (v, req) in body.items()},
            }
        if required is False:
            result["required"] = False
        return result

    def json_text(self) -> str:
        document: dict[str, Any] = {}
        for namespace in self.namespaces:
            entity_types: dict[str, Any] = {}
            for ns, name in self.entities:
                if ns == namespace:
                    ids = self.enums.get((ns, name))
                    entity_types[name] = {"enum": ids} if ids else {}
            document[namespace] = {
                "entityTypes": entity_types,
                "commonTypes": {
                    n: self.json_type(t) for ns, n, t in self.common if ns == namespace
                },
                "actions": {
                    name: {
                        "appliesTo": {
                            "principalTypes": principals,
                            "resourceTypes": resources,
                            "context": self.json_type(context),
                        }
                    }
                    for ns, name, principals, resources, context in self.actions
                    if ns == namespace
                },
            }
        return json.dumps(document)

    # Requests
    def value(self, t: Any) -> Any:
        kind, body = t
        if kind == "prim":
            return {"Bool": True, "Long": -7, "String": "v"}[body]
        if kind == "ext":
            return self.rng.choice(EXTENSIONS[body])
        if kind == "entity":
            namespace, _, name = body.rpartition("::")
            ids = self.enums.get((namespace, name), ["e"])
            return {"type": body, "id": self.rng.choice(ids)}
        if kind == "set":
            return [self.value(body) for _ in range(self.rng.randint(0, 2))]
        if kind == "common":
            return self.value(body[2])
        return {k: self.value(v) for k, (v, req) in body.items() if req or self.rng.random() < 0.5}

    def request(self) -> AuthorizationRequest:
        namespace, name, principals, resources, context_type = self.rng.choice(self.actions)
        action = EntityUid(f"{namespace}::Action" if namespace else "Action", name)
        principal, resource = self.uid(principals), self.uid(resources)
        context = self.value(context_type)
        roll = self.rng.random()
        if roll < 0.1:
            action = EntityUid(action.type, name + "x")
        elif roll < 0.2:
            principal = self.uid([self.qualified(e) for e in self.entities] + ["Nope"])
        elif roll < 0.3:
            resource = EntityUid(resource.type, "zz")  # wrong for an enumerated type only
        elif roll < 0.85:
            context = self.perturb(context)
        return AuthorizationRequest(principal, action, resource, context)

    def uid(self, types: list[str]) -> EntityUid:
        chosen = self.rng.choice(types)
        namespace, _, name = chosen.rpartition("::")
        return EntityUid(chosen, self.rng.choice(self.enums.get((namespace, name), ["e"])))

    def perturb(self, context: dict[str, Any]) -> dict[str, Any]:
        """The context with one change somewhere: a key dropped or added, a value replaced."""
        containers: list[Any] = [context]
        stack: list[Any] = [context]
        while stack:
            item = stack.pop()
            children = item.values() if isinstance(item, dict) else item
            for child in children:
                if isinstance(child, dict | list) and "type" not in child:
                    containers.append(child)
                    stack.append(child)
        target = self.rng.choice(containers)
        if isinstance(target, list):
            if target:
                target[self.rng.randrange(len(target))] = self.rng.choice(WRONG)
            return context
        roll = self.rng.random()
        if target and roll < 0.3:
            del target[self.rng.choice(list(target))]
        elif roll < 0.5:
            target["extra"] = 1
        elif target:
            target[self.rng.choice(list(target))] = self.rng.choice(WRONG)
        return context


def cedar_answer(schema: Any, request: AuthorizationRequest) -> cedar.RawDecision:
    """Cedar's answer to the request, with no policies."""
    document = {
        "principal": request.principal.to_json(),
        "action": request.action.to_json(),
        "resource": request.resource.to_json(),
        "context": dict(request.context),
    }
    return cedar.is_authorized(document, cedar.build_policy_set({}, {}), [], schema)


@pytest.mark.parametrize("seed", range(40))
def test_shape_agrees_with_cedar(seed: int) -> None:
    """For a generated schema, both syntaxes render to one shape, and for generated requests
    the shape finds a problem exactly when Cedar refuses to build the request."""
    generator = Generator(seed)
    text = generator.cedar_text()
    schema = cedar.parse_schema(text, is_json=False)
    shape = parse_shape(cedar.schema_text(schema))
    assert shape == parse_shape(text)
    assert shape == shape_of(generator.json_text(), is_json=True)
    refused = 0
    for _ in range(25):
        request = generator.request()
        problems = request_problems(request, shape)
        raw = cedar_answer(schema, request)
        assert (raw.no_decision is None) == (not problems), (text, request, problems)
        if raw.no_decision is not None:
            refused += 1
            # The error the caller gets is the precise one, never the generic fallback.
            error = explain_no_decision(raw.no_decision, request, shape)
            assert error.problem != raw.no_decision.problem, (text, request, raw.no_decision)
            assert (error.field, error.problem) in {(p.field, p.problem) for p in problems}
    assert refused  # the generator does produce bad requests


def no_extension_check(name: str, value: Any) -> bool:
    """An extension check that must not be called."""
    raise AssertionError("not an extension value")


def problems_of(
    context: dict[str, Any], check: Callable[[str, Any], bool] | None = None
) -> list[str]:
    """The problems the lending schema finds in a view request with ``context``."""
    shape = shape_of(LENDING.read_text())
    request = AuthorizationRequest(
        EntityUid("Employee", "uma"), EntityUid("Action", "view"), EntityUid("Loan", "l"), context
    )
    found = request_problems(request, shape, check or cedar.extension_accepts)
    return [p.problem for p in found]


def test_context_problems_name_path_and_type_never_the_value() -> None:
    """Each context problem names the attribute and the expected type; values stay out."""
    secret = "SECRET-4111-1111"
    found = problems_of({"mfa": secret, "now": secret, "source_ip": [secret], secret[:3]: 1})
    assert found == [
        "attribute SEC is not declared in the schema",
        "attribute mfa must be a Bool",
        'attribute now must be a datetime (e.g. "2025-03-04T10:00:00Z")',
        'attribute source_ip must be an ipaddr (e.g. "10.0.0.1")',
    ]
    assert problems_of({"now": "2025-03-04"}) == [
        "attribute mfa is missing (the schema requires a Bool)"
    ]
    assert problems_of({"mfa": True, "nwo": "2025-03-04"}) == [
        'attribute now is missing (the schema requires a datetime (e.g. "2025-03-04T10:00:00Z"))',
        "attribute nwo is not declared in the schema; did you mean now?",
    ]
    assert problems_of({"mfa": True, "now": "2025-03-04"}) == []


def test_nested_paths() -> None:
    """Nested records, sets and odd attribute names appear as paths; entity references name
    their type and an enumerated type's ids."""
    shape = shape_of(
        'entity U; entity C enum ["red"]; action a appliesTo { principal: U, resource: U, '
        'context: { address: { city: String, "zip code"?: Long }, tags: Set<String>, '
        "who?: U, color?: C, list?: Set<{ n: Long }> } };"
    )
    request = AuthorizationRequest(
        EntityUid("U", "u"),
        EntityUid("Action", "a"),
        EntityUid("U", "u"),
        {
            "address": {"zip code": "x"},
            "tags": ["ok", 5],
            "who": {"type": "C", "id": "red"},
            "color": {"__entity": {"type": "C", "id": "blue"}},
            "list": [{"n": 1}, {"nn": 2}],
        },
    )
    found = [p.problem for p in request_problems(request, shape, no_extension_check)]
    # In the order of the schema as Cedar renders it (attributes sorted by name).
    assert found == [
        "attribute address.city is missing (the schema requires a String)",
        'attribute address["zip code"] must be a Long',
        'attribute color must be an entity reference of type C with one of the ids "red"',
        "attribute list[1].n is missing (the schema requires a Long)",
        "attribute list[1].nn is not declared in the schema; did you mean list[1].n?",
        "attribute tags[1] must be a String",
        "attribute who must be an entity reference of type U",
    ]


def test_action_and_types() -> None:
    """Undeclared actions and types get the nearest declared name when one is close; a
    declared type an action does not take lists the ones it does."""
    shape = shape_of(LENDING.read_text())

    def problems(principal: str, action: str, resource: str = "Loan") -> list[str]:
        request = AuthorizationRequest(
            EntityUid(principal, "p"),
            EntityUid("Action", action),
            EntityUid(resource, "r"),
            {"mfa": True, "now": "2025-03-04"},
        )
        return [f"{p.field}: {p.problem}" for p in request_problems(request, shape)]

    assert problems("Employee", "veiw") == [
        'action: Action::"veiw" is not declared; did you mean Action::"view"?'
    ]
    assert problems("Employee", "zzzz") == ['action: Action::"zzzz" is not declared in the schema']
    assert problems("Employe", "view") == [
        "principal: entity type Employe is not declared in the schema; did you mean Employee? "
        '(Action::"view" allows Borrower, Employee)'
    ]
    assert problems("Foo", "view") == [
        'principal: entity type Foo is not declared in the schema (Action::"view" allows '
        "Borrower, Employee)"
    ]
    assert problems("Role", "approve", "Lone") == [
        'principal: entity type Role is not allowed for Action::"approve" (allowed: Employee)',
        "resource: entity type Lone is not declared in the schema; did you mean Loan? "
        '(Action::"approve" allows Loan)',
    ]


def test_schema_shape_is_read_once_per_snapshot(tmp_path: Path) -> None:
    """The snapshot reads the shape on first use and keeps it."""
    store = tmp_path / "s"
    store.mkdir()
    (store / "schema.cedarschema").write_text(LENDING.read_text())
    snapshot = load_store(store)
    first = snapshot.schema_shape
    assert first is not None
    assert first is snapshot.schema_shape


def test_extension_checks_are_bounded() -> None:
    """Cedar checks at most 64 extension values of one context; later ones count as valid."""
    shape = shape_of(
        "entity U; action a appliesTo { principal: U, resource: U, context: { d: Set<datetime> } };"
    )
    calls: list[Any] = []

    def check(name: str, value: Any) -> bool:
        calls.append(value)
        return bool(value != "bad")

    request = AuthorizationRequest(
        EntityUid("U", "u"), EntityUid("Action", "a"), EntityUid("U", "u"), {"d": ["ok"] * 999}
    )
    assert request_problems(request, shape, check) == []
    assert len(calls) == 64
    early = AuthorizationRequest(
        request.principal, request.action, request.resource, {"d": ["ok", "bad", *["ok"] * 500]}
    )
    assert [p.problem for p in request_problems(early, shape, check)] == [
        'attribute d[1] must be a datetime (e.g. "2025-03-04T10:00:00Z")'
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SOUP), max_size=30))
def test_any_text_is_a_shape_or_a_syntax_error(tokens: list[str]) -> None:
    """Token soup never raises anything but ShapeSyntaxError (an error path must not fail)."""
    with contextlib.suppress(ShapeSyntaxError):
        parse_shape(" ".join(tokens))
