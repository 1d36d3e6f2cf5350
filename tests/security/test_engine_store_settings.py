"""store.toml refuses settings that would let a caller dodge a forbid or send actions inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores import write_store
from verdict.errors import PolicyLoadError
from verdict.policy.loader import load_store
from verdict.policy.snapshot import ErrorMode

Files = dict[str, str | list[Any]]
# The dodge: without a schema, "5000" (a string) makes the forbid error, and skip drops it.
DODGE_POLICIES = (
    '@id("all") permit(principal, action, resource);\n'
    '@id("cap") forbid(principal, action, resource) when { context.amount > 1000 };\n'
)
SCHEMA = (
    "entity User; entity Doc;\n"
    "action view appliesTo { principal: User, resource: Doc, context: { amount: Long } };\n"
)


def diagnostics_of(root: Path) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_store(root)
    return [str(d) for d in info.value.diagnostics]


def test_skip_without_a_schema_is_refused_at_load(tmp_path: Path) -> None:
    """on_evaluation_error = "skip" on a store without a schema is a located load error."""
    toml = '# exact Cedar semantics\non_evaluation_error = "skip"\n'
    root = write_store(tmp_path, "s", {"p.cedar": DODGE_POLICIES, "store.toml": toml})
    assert diagnostics_of(root) == [
        's/store.toml:2: on_evaluation_error = "skip" needs a schema and validation = "strict"'
    ]


def test_skip_without_strict_validation_is_refused_at_load(tmp_path: Path) -> None:
    """A schema is not enough: skip also needs validation = "strict" (then it loads)."""
    toml = 'validation = "off"\non_evaluation_error = "skip"\n'
    files: Files = {"p.cedar": DODGE_POLICIES, "schema.cedarschema": SCHEMA, "store.toml": toml}
    assert diagnostics_of(write_store(tmp_path / "off", "s", files)) == [
        's/store.toml:2: on_evaluation_error = "skip" needs a schema and validation = "strict"'
    ]
    strict = {**files, "store.toml": 'on_evaluation_error = "skip"\n'}
    store = load_store(write_store(tmp_path / "strict", "s", strict))
    assert store.settings.on_evaluation_error is ErrorMode.SKIP


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["Action"]', "request_entity_types: actions can never be sent per request ('Action')"),
        (
            '["Doc", "App::Action"]',
            "request_entity_types: actions can never be sent per request ('App::Action')",
        ),
        ('["not a type"]', "request_entity_types: 'not a type' is not a Cedar entity type name"),
        ('"Doc"', "request_entity_types must be a list of entity type names"),
    ],
)
def test_request_entity_types_are_checked_at_load(tmp_path: Path, value: str, message: str) -> None:
    """request_entity_types must list entity type names, and never an action type."""
    toml = f'validation = "off"\nrequest_entity_types = {value}\n'
    root = write_store(tmp_path, "s", {"p.cedar": DODGE_POLICIES, "store.toml": toml})
    assert diagnostics_of(root) == [f"s/store.toml:2: {message}"]


def test_request_entity_types_default_to_none(tmp_path: Path) -> None:
    """Without the setting no type may be sent inline; listed types are read as given."""
    files: Files = {"p.cedar": DODGE_POLICIES}
    assert (
        load_store(write_store(tmp_path / "a", "s", files)).settings.request_entity_types
        == frozenset()
    )
    listed: Files = {**files, "store.toml": 'request_entity_types = ["Doc", "App::Draft"]\n'}
    store = load_store(write_store(tmp_path / "b", "s", listed))
    assert store.settings.request_entity_types == {"Doc", "App::Draft"}
