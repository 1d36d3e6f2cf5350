"""Name what a request gets wrong when Cedar builds no request from it: the undeclared action or
entity type (with the nearest declared one), the types an action allows, and the context
attribute that is missing, undeclared or of the wrong type. Never a context value or an id.

Cedar's own texts quote whole context values; they are read (in verdict.cedar) only for which
check failed. The request is then read against the schema's shape to say what is wrong.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from verdict import cedar
from verdict.cedar import NoDecisionFault
from verdict.cedar_json import child_path
from verdict.errors import RequestError
from verdict.model import AuthorizationRequest, EntityUid, quote_id
from verdict.schema_shape import (
    ActionShape,
    CedarType,
    EntityRef,
    Extension,
    Primitive,
    RecordType,
    SchemaShape,
    SetOf,
)

ExtensionCheck = Callable[[str, Any], bool]
_CUTOFF = 0.6  # difflib's default: "veiw" -> "view" (0.75), "zzz" -> nothing
_MAX_LISTED = 10  # enum ids and allowed types shown at most
# Each extension value is checked by Cedar (~25 µs): a context of 1,000 datetimes must not cost
# 25 ms on the error path. Values past the cap count as valid (a problem among them then gets
# the generic message).
_MAX_EXTENSION_CHECKS = 64
_EXAMPLES = {
    "datetime": '"2025-03-04T10:00:00Z"',
    "ipaddr": '"10.0.0.1"',
    "decimal": '"12.3456"',
    "duration": '"1h30m"',
}


def explain_no_decision(
    fault: NoDecisionFault, request: AuthorizationRequest, shape: SchemaShape | None
) -> RequestError:
    """The error for a request Cedar could not build: as precise as the shape allows, else
    the data-free problem Cedar's text was classified as."""
    if shape is not None:
        found = _matching(fault, request_problems(request, shape))
        if found is not None:
            return found
    return RequestError(fault.field, fault.problem)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field, Cedar's check that it fails (a
    ``NoDecisionFault.kind``), the attribute name it is about, and the caller-safe text."""

    field: str
    kind: str
    problem: str
    name: str = ""

    def error(self) -> RequestError:
        """The RequestError a caller gets for it."""
        return RequestError(self.field, self.problem)


def request_problems(
    request: AuthorizationRequest,
    shape: SchemaShape,
    extension_ok: ExtensionCheck = cedar.extension_accepts,
) -> list[Problem]:
    """Everything wrong with ``request`` against the schema: an undeclared action alone (nothing
    else can be judged without it), else the principal, the resource, enumerated ids, then the
    context in the schema's attribute order. None exactly when Cedar builds the request
    (tests/unit/test_schema_shape.py holds the two equal on generated schemas and requests)."""
    action = shape.actions.get(request.action)
    if action is None:
        return [Problem("action", "action", _undeclared_action(request.action, shape))]
    problems = [
        Problem(role, "scope", problem)
        for role, uid, allowed in (
            ("principal", request.principal, action.principals),
            ("resource", request.resource, action.resources),
        )
        if (problem := _scope_problem(uid, allowed, action, shape)) is not None
    ]
    problems += [
        Problem(role, "enum", _enum_problem(uid.type, shape.enums[uid.type]))
        for role, uid in (("principal", request.principal), ("resource", request.resource))
        if uid.id not in shape.enums.get(uid.type, (uid.id,))
    ]
    walk = _ContextWalk(shape, extension_ok)
    walk.record(request.context, action.context, "")
    return problems + walk.found


def _matching(fault: NoDecisionFault, problems: list[Problem]) -> RequestError | None:
    """The problem to report: the action, principal or resource first (Cedar may report the
    context first, but a request for the wrong thing is the bigger mistake), else the context
    problem of the kind Cedar's check found; None when the shape sees nothing wrong (then the
    shape and Cedar disagree, and the generic message is the honest one)."""
    named = [p for p in problems if p.field != "context_json"]
    if named:
        return named[0].error()
    context = [p for p in problems if p.field == "context_json"]
    of_kind = [p for p in context if p.kind == fault.kind]
    if fault.kind in ("missing", "undeclared"):
        wanted = [p for p in of_kind if p.name == fault.name] or of_kind
    else:
        wanted = [p for p in context if p.kind == "type"]
    found = wanted or context
    return found[0].error() if found else None


def _undeclared_action(action: EntityUid, shape: SchemaShape) -> str:
    same_type = [uid for uid in shape.actions if uid.type == action.type]
    candidates = same_type or list(shape.actions)
    by_id: dict[str, EntityUid] = {}
    for uid in sorted(candidates, key=str):
        by_id.setdefault(uid.id, uid)
    near = [i for i in by_id if _may_match(action.id, i)]
    nearest = difflib.get_close_matches(action.id, near, n=1, cutoff=_CUTOFF) if near else []
    if nearest:
        return f"{action} is not declared; did you mean {by_id[nearest[0]]}?"
    return f"{action} is not declared in the schema"


def _scope_problem(
    uid: EntityUid, allowed: tuple[str, ...], action: ActionShape, shape: SchemaShape
) -> str | None:
    if uid.type in allowed:
        return None
    if uid.type not in shape.entity_types:
        nearest = nearest_name(uid.type, allowed) or nearest_name(uid.type, shape.entity_types)
        hint = f"; did you mean {nearest}?" if nearest else ""
        # The types the action takes, so a caller with no close match still learns what fits.
        fits = f" ({action.uid} allows {_listed(allowed)})" if allowed else ""
        return f"entity type {uid.type} is not declared in the schema{hint}{fits}"
    if not allowed:
        return (
            f"entity type {uid.type} is not allowed for {action.uid}: the schema gives that "
            "action no appliesTo, so no request may name it"
        )
    return f"entity type {uid.type} is not allowed for {action.uid} (allowed: {_listed(allowed)})"


def nearest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest ``name`` (difflib, cutoff 0.6), or None when none is near."""
    # Only candidates whose length allows a ratio of _CUTOFF (difflib's own upper bound,
    # 2 * shorter / total): the same answer, but a name far longer than every candidate (a
    # caller's 1 MB attribute name) is never handed to difflib, which reads all of it in
    # Python (~0.6 s of event loop per megabyte).
    near = sorted(c for c in candidates if _may_match(name, c))
    found = difflib.get_close_matches(name, near, n=1, cutoff=_CUTOFF) if near else []
    return found[0] if found else None


def _may_match(name: str, candidate: str) -> bool:
    """Whether difflib's ratio of the two can reach _CUTOFF (its real_quick_ratio bound)."""
    total = len(name) + len(candidate)
    return total == 0 or 2.0 * min(len(name), len(candidate)) / total >= _CUTOFF


def _listed(items: Iterable[str]) -> str:
    values = list(items)
    shown = ", ".join(values[:_MAX_LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else "")


def _enum_problem(type_name: str, ids: tuple[str, ...]) -> str:
    return (
        f"has an id that is not one of the declared {type_name} entities "
        f"({_listed(quote_id(i) for i in ids)})"
    )


class _ContextWalk:
    """Reads a context against its record type; collects what does not conform. Descends only
    where the schema's type does, so its depth is bounded by the schema's."""

    def __init__(self, shape: SchemaShape, extension_ok: ExtensionCheck) -> None:
        self.shape = shape
        self.extension_ok = extension_ok
        self.found: list[Problem] = []
        self.extension_checks = 0

    def add(self, kind: str, name: str, problem: str) -> None:
        self.found.append(Problem("context_json", kind, problem, name))

    def record(self, value: Mapping[str, Any], expected: RecordType, path: str) -> None:
        declared = expected.attributes
        for key, attribute in declared.items():
            if key not in value and attribute.required:
                needed = self.describe(attribute.type)
                where = _child(path, key)
                self.add(
                    "missing", key, f"attribute {where} is missing (the schema requires {needed})"
                )
        for key in value:
            if key not in declared:
                nearest = nearest_name(key, (k for k in declared if k not in value))
                hint = f"; did you mean {_child(path, nearest)}?" if nearest else ""
                self.add(
                    "undeclared",
                    key,
                    f"attribute {_child(path, key)} is not declared in the schema{hint}",
                )
        for key, attribute in declared.items():
            if key in value:
                self.value(value[key], attribute.type, _child(path, key), key)

    def value(self, value: Any, expected: CedarType, path: str, name: str) -> None:
        if isinstance(expected, RecordType) and isinstance(value, dict):
            self.record(value, expected, path)
        elif isinstance(expected, SetOf) and isinstance(value, list):
            for index, item in enumerate(value):
                self.value(item, expected.element, f"{path}[{index}]", name)
        elif not self.conforms(value, expected):
            self.add("type", name, f"attribute {path} must be {self.describe(expected)}")

    def conforms(self, value: Any, expected: CedarType) -> bool:
        """Whether a value that is neither a record nor a set where one is expected conforms."""
        if isinstance(expected, Primitive):
            kinds = {"Bool": (bool,), "Long": (int,), "String": (str,)}[expected.name]
            return isinstance(value, kinds) and (expected.name == "Bool") == isinstance(value, bool)
        if isinstance(expected, Extension):
            self.extension_checks += 1
            if self.extension_checks > _MAX_EXTENSION_CHECKS:
                return True
            return self.extension_ok(expected.name, value)
        if isinstance(expected, EntityRef):
            uid = _entity_reference(value)
            if uid is None or uid.type != expected.name:
                return False
            return uid.id in self.shape.enums.get(uid.type, (uid.id,))
        return False  # a record or set expected, something else given

    def describe(self, expected: CedarType) -> str:
        """``a Bool``, ``a Set<String>``, ``a record``, ``an entity reference of type X``..."""
        if isinstance(expected, EntityRef):
            text = f"an entity reference of type {expected.name}"
            if expected.name in self.shape.enums:
                ids = _listed(map(quote_id, self.shape.enums[expected.name]))
                text += f" with one of the ids {ids}"
            return text
        if isinstance(expected, Extension):
            example = _EXAMPLES.get(expected.name)
            return _article(expected.name) + (f" (e.g. {example})" if example else "")
        return _article(_type_name(expected))


def _type_name(expected: CedarType) -> str:
    if isinstance(expected, SetOf):
        return f"Set<{_type_name(expected.element)}>"
    if isinstance(expected, RecordType):
        return "record"
    return expected.name


def _article(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _child(path: str, key: str) -> str:
    """``a.b`` or ``a["b c"]`` (cedar_json's path form), with no leading dot at the root."""
    return child_path(path, key).removeprefix(".")


def _entity_reference(value: Any) -> EntityUid | None:
    """The uid Cedar reads from a context value where an entity is expected: ``{"type",
    "id"}`` or ``{"__entity": {"type", "id"}}`` (Cedar ignores other keys beside them)."""
    if not isinstance(value, dict):
        return None
    inner = value.get("__entity", value)
    if not isinstance(inner, dict):
        return None
    kind, key = inner.get("type"), inner.get("id")
    if isinstance(kind, str) and isinstance(key, str):
        return EntityUid(kind, key)
    return None
