"""``type_bound_problem``: a schema's types written out (common types expanded) and its chains of
action groups are bounded exactly, whatever the schema's syntax; Cedar's rendering is read."""

from __future__ import annotations

import pytest

from verdict import cedar
from verdict.schema_shape.bounds import (
    MAX_ACTION_DEPTH,
    MAX_TYPE_DEPTH,
    MAX_TYPE_SIZE,
    type_bound_problem,
)

TAIL = (
    "entity E = { t: T0 };\n"
    "action read appliesTo { principal: E, resource: E, context: { c: T0 } };\n"
)


def bound(schema: str, *, is_json: bool = False) -> tuple[str, str] | None:
    return type_bound_problem(cedar.schema_text(cedar.parse_schema(schema, is_json=is_json)))


def chained(levels: int) -> str:
    """T0 nested ``levels`` deep: T0 = {a: T1}, ..., T(levels-1) = {a: Long}."""
    types = "".join(f"type T{i} = {{ a: T{i + 1} }};\n" for i in range(levels - 1))
    return types + f"type T{levels - 1} = {{ a: Long }};\nentity E;\n"


def shared(count: int) -> str:
    types = "".join(f"type T{i} = {{ a: T{i + 1}, b: T{i + 1} }};\n" for i in range(count))
    return types + f"type T{count} = Long;\n" + TAIL


def test_the_depth_bound_is_exact() -> None:
    # T0 written out: `levels` records and the Long inside the last.
    assert bound(chained(MAX_TYPE_DEPTH - 1)) is None
    problem = bound(chained(MAX_TYPE_DEPTH))
    assert problem is not None
    deeper = f"is nested deeper than {MAX_TYPE_DEPTH} levels"
    assert problem == ("T0", f"common type T0 {deeper} (common types written out)")


def test_the_size_bound_counts_shared_types_as_written_out() -> None:
    # 2**(n+1) - 1 types for n shared levels: 11 levels 4,095, 12 levels 8,191.
    assert MAX_TYPE_SIZE < 8_191
    assert bound(shared(11)) is None
    problem = bound(shared(12))
    assert problem is not None
    assert problem == (
        "T0",
        f"common type T0 holds more than {MAX_TYPE_SIZE:,} types (common types written out)",
    )


def test_entity_attributes_and_contexts_are_measured_too() -> None:
    inline = "entity E = " + "{ a: " * 70 + "Long" + " }" * 70 + ";\n"
    problem = bound(inline)
    assert problem is not None
    assert problem[1].startswith("the attributes of E is nested deeper")
    context = (
        "entity U;\naction read appliesTo { principal: U, resource: U, context: "
        + "{ a: " * 70
        + "Long"
        + " }" * 70
        + " };\n"
    )
    problem = bound(context)
    assert problem is not None
    assert problem[1].startswith('the context of Action::"read" is nested')


@pytest.mark.parametrize("namespace", ["", "N"])
def test_chains_of_action_groups_are_bounded(namespace: str) -> None:
    def schema(depth: int) -> str:
        actions = "".join(f'action a{i} in [Action::"a{i + 1}"];\n' for i in range(depth))
        body = (
            "entity U;\naction read appliesTo { principal: U, resource: U };\n"
            + actions
            + f"action a{depth};\n"
        )
        return f"namespace {namespace} {{ {body} }}" if namespace else body

    assert bound(schema(MAX_ACTION_DEPTH)) is None
    problem = bound(schema(MAX_ACTION_DEPTH + 1))
    kind = f"{namespace}::Action" if namespace else "Action"
    assert problem == (
        "a0",
        f'the groups of {kind}::"a0" are chained deeper than {MAX_ACTION_DEPTH}',
    )


def test_the_lending_schema_is_well_within_the_bounds() -> None:
    from tests.conftest import POLICIES

    assert bound((POLICIES / "lending" / "schema.cedarschema").read_text()) is None
