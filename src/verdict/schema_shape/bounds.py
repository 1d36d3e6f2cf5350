"""Bound the size and depth of a schema's types with common types written out, at load.

Cedar writes a declared type out in full in the error for a value that does not match it, and
walks it recursively: a 608-byte schema of 17 common types that each use the next twice
(2**17 leaves) cost ~3 s and ~300 MB of the event loop for one caller's mismatched context,
20 of them 24 s and 2.4 GB, and ~4,700 common types chained one inside the next crashed the
server (SIGSEGV) on a mismatched context or entity write (attack round 18). Real schemas are
far from either bound; a schema past one is refused when loaded, naming the type.
"""

from __future__ import annotations

from verdict.schema_shape.syntax import (
    Declarations,
    Expr,
    Named,
    Parser,
    RecordExpr,
    SetExpr,
    lookup,
)
from verdict.schema_shape.types import ShapeSyntaxError

MAX_TYPE_DEPTH = 64
MAX_TYPE_SIZE = 5_000
MAX_ACTION_DEPTH = 100
_UNMEASURED = (
    "its types cannot be measured: Cedar cannot render it in Cedar syntax (a JSON schema"
    " whose entity shape names a common type?); declare entity shapes as records"
)

Measure = tuple[int, int]  # (depth, size): levels and types, common types written out


def type_bound_problem(text: str) -> tuple[str, str] | None:
    """A type a schema (Cedar syntax; cedarpy's rendering of any schema) declares too deep or
    too large written out: (the name it is declared under, why), or None. A rendering this
    reader cannot read is refused too (its types cannot be measured)."""
    try:
        found = Parser(text).parse()
    except (ShapeSyntaxError, RecursionError):
        # Fail closed: unmeasured, a schema could hold the types this bound exists for (a
        # JSON schema whose entity shape names a common type has no Cedar-syntax rendering,
        # and with it round 19 crashed the server through one caller's mismatched context).
        return "", _UNMEASURED
    chain = _deepest_action_chain(found.action_parents)
    if chain is not None:
        return chain
    measures = _Measures(found)
    declared: list[tuple[str, str, str, Expr]] = [
        (namespace, name, f"common type {name}", expr)
        for name, (namespace, expr) in found.common.items()
    ]
    declared += [(ns, name, what, expr) for ns, name, what, expr in found.entity_types]
    for namespace, name, _, _, context in found.actions:
        if context is not None:
            action = f'{namespace + "::" if namespace else ""}Action::"{name}"'
            declared.append((namespace, name, f"the context of {action}", context))
    for namespace, name, what, expr in declared:
        depth, size = measures.of(namespace, expr)
        if depth > MAX_TYPE_DEPTH:
            problem = f"is nested deeper than {MAX_TYPE_DEPTH} levels"
        elif size > MAX_TYPE_SIZE:
            problem = f"holds more than {MAX_TYPE_SIZE:,} types"
        else:
            continue
        return name.rpartition("::")[2], f"{what} {problem} (common types written out)"
    return None


def _deepest_action_chain(
    parents: dict[tuple[str, str], list[tuple[str, str]]],
) -> tuple[str, str] | None:
    """An action whose chain of groups is longer than MAX_ACTION_DEPTH, as a problem. Cedar
    closes the action hierarchy and renders every action with all its ancestors (the policy
    index reads them): 2,000 chained groups built ~130 MB of it and held a reload's decisions
    ~1.5 s beyond Cedar's own build (attack round 18). Cycles are Cedar's to refuse."""
    depth: dict[tuple[str, str], int] = {}  # done: edges to the top of the longest chain
    entered: set[tuple[str, str]] = set()
    for start in parents:
        if start in depth:
            continue
        stack = [(start, iter(parents[start]))]
        entered.add(start)
        while stack:
            action, pending = stack[-1]
            following = next((p for p in pending if p in parents and p not in entered), None)
            if following is not None:
                entered.add(following)
                stack.append((following, iter(parents[following])))
                continue
            # Every parent is done, undeclared, or on the stack (a cycle: not followed).
            depth[action] = max(
                (depth[p] + 1 if p in depth else 1 for p in parents[action]), default=0
            )
            stack.pop()
            if depth[action] > MAX_ACTION_DEPTH:
                kind, name = action
                why = f'the groups of {kind}::"{name}" are chained deeper than {MAX_ACTION_DEPTH}'
                return name, why
    return None


class _Measures:
    """Depth and size of type expressions; each common type measured once, its references
    first, without recursion along chains of common types."""

    def __init__(self, found: Declarations) -> None:
        self.found = found
        self.common: dict[str, Measure] = {}

    def of(self, namespace: str, expr: Expr) -> Measure:
        for name in self._commons(namespace, expr):
            self._measure_common(name)
        return self._expr(namespace, expr)

    def _measure_common(self, start: str) -> None:
        stack, entered = [start], set()
        while stack:
            name = stack[-1]
            if name in self.common:
                stack.pop()
                continue
            namespace, expr = self.found.common[name]
            waiting = [c for c in self._commons(namespace, expr) if c not in self.common]
            if waiting and name not in entered:
                entered.add(name)
                stack.extend(waiting)
                continue
            # A cycle (Cedar refuses those itself) is measured as a leaf where it closes.
            self.common[name] = self._expr(namespace, expr) if not waiting else (1, 1)
            stack.pop()

    def _commons(self, namespace: str, expr: Expr) -> list[str]:
        """The common types ``expr`` names directly (not through other common types)."""
        found: list[str] = []
        pending = [expr]
        while pending:
            item = pending.pop()
            if isinstance(item, SetExpr):
                pending.append(item.element)
            elif isinstance(item, RecordExpr):
                pending.extend(t for _, t, _ in item.attributes)
            elif (name := self._common_name(namespace, item)) is not None:
                found.append(name)
        return found

    def _common_name(self, namespace: str, named: Named) -> str | None:
        kind, name = lookup(self.found, namespace, named.path)
        return name if kind == "common" else None

    def _expr(self, namespace: str, expr: Expr) -> Measure:
        """Within one declaration: nesting there is bounded by the text's own (cedar_nesting)."""
        if isinstance(expr, SetExpr):
            depth, size = self._expr(namespace, expr.element)
            return depth + 1, size + 1
        if isinstance(expr, RecordExpr):
            parts = [self._expr(namespace, t) for _, t, _ in expr.attributes]
            depth = 1 + max((d for d, _ in parts), default=0)
            return depth, min(1 + sum(s for _, s in parts), MAX_TYPE_SIZE + 1)
        name = self._common_name(namespace, expr)
        return self.common.get(name, (1, 1)) if name is not None else (1, 1)
