"""Which uids a policy names, and which of those its conditions read the stored data of.

Cedar reads an entity's stored data only where an expression's value is the operand of
attribute access (``.``), ``has``, ``getTag``, ``hasTag``, or the left side of ``in`` (and of
``is ... in``): those need the entity's attributes, tags or ancestors. Everywhere else an entity
is a plain value: ``==``, ``contains``, the right side of ``in`` compare uids only, and a scope
(``principal in Group::"g"``) tests the request's entity's ancestors, never the group's data.
So only uids that can flow into one of those operands must be fetched into a slice; the rest
(``literal_uids`` still lists them all, for the request-entity rules) are dead weight.

The flow analysis is conservative: a uid inside any expression that can produce it (an entity
literal, a record or set literal holding it, either branch of an ``if``, an attribute of such a
record) counts as produced, and an expression shape this module does not know marks every uid
inside it as read. Reading a uid too many costs one lookup; missing one would change answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from verdict.cedar_json import parse_uid
from verdict.model import EntityUid

# Operators whose result is never an entity (booleans, numbers, strings, extension values):
# their operands' values do not flow out, only what those operands read.
_PLAIN_BINARY = frozenset(
    {"==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*"}
    | {"contains", "containsAll", "containsAny"}
)
_PLAIN_UNARY = frozenset({"!", "neg", "isEmpty"})
_VARIABLES = frozenset({"Var", "Slot", "Unknown"})


def literal_uids(est: Any) -> Iterator[EntityUid]:
    """Every uid a policy names: scope constraints and entity literals in conditions."""
    stack = [est]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("entity", "__entity") and (uid := parse_uid(value)) is not None:
                    yield uid
                elif key == "entities" and isinstance(value, list):
                    yield from (u for v in value if (u := parse_uid(v)) is not None)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def read_uids(est: Any) -> frozenset[EntityUid]:
    """The uids named in a policy's conditions whose stored data Cedar may read."""
    read: set[EntityUid] = set()
    conditions = est.get("conditions", []) if isinstance(est, dict) else est
    for condition in conditions if isinstance(conditions, list) else [conditions]:
        body = condition.get("body") if isinstance(condition, dict) else condition
        try:
            _flow(body, read)
        except RecursionError:
            # Nesting deeper than Python's stack: count every uid in the condition as read.
            read.update(literal_uids(body))
    return frozenset(read)


def _flow(node: Any, read: set[EntityUid]) -> set[EntityUid]:
    """Add to ``read`` the uids ``node`` reads; return the uids its value may be or hold."""
    if not isinstance(node, dict) or len(node) != 1:
        return _unknown(node, read)
    ((op, arg),) = node.items()
    if op == "Value":
        if not isinstance(arg, dict | list):
            return set()  # a scalar: most values, so no walk
        uid = parse_uid(arg) if isinstance(arg, dict) and "__entity" in arg else None
        return {uid} if uid is not None else set(literal_uids(arg))
    if op in _VARIABLES:
        return set()
    if not isinstance(arg, dict | list):
        return _unknown(node, read)
    if isinstance(arg, list):
        held = {u for item in arg for u in _flow(item, read)}
        # A set literal holds its elements; an extension function never returns an entity.
        return held if op == "Set" else set()
    return _operator(op, arg, node, read)


def _operator(op: str, arg: dict[str, Any], node: Any, read: set[EntityUid]) -> set[EntityUid]:
    if op in (".", "getTag"):
        # The value of a record literal's attribute may be one of its uids.
        held = _flow(arg.get("left"), read)
        read.update(held)
        if op == "getTag":
            _flow(arg.get("right"), read)
        return held
    if op in ("has", "hasTag", "in", "is"):
        left = _flow(arg.get("left"), read)
        if op != "is" or "in" in arg:
            read.update(left)
        for key in ("right", "in"):
            if key in arg:
                _flow(arg[key], read)
        return set()
    if op in _PLAIN_BINARY or op == "like":
        for key in ("left", "right"):
            if key in arg:
                _flow(arg[key], read)
        return set()
    if op in _PLAIN_UNARY:
        _flow(arg.get("arg"), read)
        return set()
    if op == "if-then-else":
        _flow(arg.get("if"), read)
        return _flow(arg.get("then"), read) | _flow(arg.get("else"), read)
    if op == "Record":
        return {u for value in arg.values() for u in _flow(value, read)}
    return _unknown(node, read)


def _unknown(node: Any, read: set[EntityUid]) -> set[EntityUid]:
    named = set(literal_uids(node))
    read.update(named)
    return named
