"""Errors in policy files point at the exact line, as a new user would expect (issue: policy
lifecycle, authoring tools)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from verdict.errors import PolicyLoadError
from verdict.policy.loader import load_store
from verdict.store.entity_file import read_entities_file


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the lending store."""
    root = tmp_path / "lending"
    shutil.copytree(POLICIES / "lending", root)
    return root


def edit(path: Path, line: int, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` on 1-based ``line`` of ``path`` (which must hold it)."""
    lines = path.read_text().split("\n")
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new)
    path.write_text("\n".join(lines))


def problems(root: Path) -> list[str]:
    """Every diagnostic loading ``root`` gives."""
    with pytest.raises(PolicyLoadError) as refused:
        load_store(root)
    return [str(d) for d in refused.value.diagnostics]


def test_an_attribute_typo_is_reported_on_its_line(store: Path) -> None:
    """`principal.partnr` on line 16 of staff.cedar: line 16, not the policy's @id line (3)."""
    edit(store / "staff.cedar", 16, "principal.partner", "principal.partnr")
    assert problems(store) == [
        "lending/staff.cedar:16: policy 'staff-view-partner-loans' fails schema validation: "
        "attribute `partnr` on entity type `Employee` not found"
    ]


def test_a_syntax_error_is_reported_on_its_line(store: Path) -> None:
    """A doubled `&&` on line 15 is reported at 15."""
    edit(store / "staff.cedar", 15, ") &&", ") && &&")
    assert problems(store) == ["lending/staff.cedar:15: syntax error: unexpected token `&&`"]


def test_a_missing_semicolon_is_reported_where_it_is_missing(store: Path) -> None:
    """The first policy's `};` (line 17) without its `;`: reported at 17, not at the next
    policy's @id line."""
    edit(store / "staff.cedar", 17, "};", "}")
    assert problems(store) == [
        "lending/staff.cedar:17: syntax error: missing ';' at the end of this policy"
    ]


def test_an_unknown_variable_is_reported_on_its_line(store: Path) -> None:
    """`contxt.mfa` (a misspelt variable) names its own line."""
    text = (store / "guardrails.cedar").read_text().split("\n")
    line = next(i for i, t in enumerate(text, 1) if "unless { context.mfa }" in t)
    edit(store / "guardrails.cedar", line, "context.mfa", "contxt.mfa")
    found = problems(store)
    assert len(found) == 1
    assert found[0].startswith(f"lending/guardrails.cedar:{line}: syntax error: ")
    assert "contxt" in found[0]


def test_an_entities_error_names_its_line(store: Path) -> None:
    """A wrongly typed attribute on line 17 of entities.json (liam's entity) is at line 17."""
    edit(store / "entities.json", 17, '"approval_limit": 100000', '"approval_limit": "lots"')

    snapshot = load_store(store)
    with pytest.raises(PolicyLoadError) as refused:
        read_entities_file(store / "entities.json", snapshot.schema, "lending/entities.json")
    assert str(refused.value.diagnostics[0]).startswith("lending/entities.json:17: ")


def test_an_entities_syntax_error_names_its_line(store: Path) -> None:
    """A JSON syntax error on line 19 of entities.json is at line 19."""
    edit(store / "entities.json", 19, '"parents"', '"parents" "x"')

    with pytest.raises(PolicyLoadError) as refused:
        read_entities_file(store / "entities.json", None, "lending/entities.json")
    assert str(refused.value.diagnostics[0]).startswith("lending/entities.json:19: ")


def test_a_broken_schema_is_one_error_on_its_line(store: Path) -> None:
    """A typo on line 29 of the schema is one error at line 29, with no second, misleading
    'strict needs a schema' error."""
    edit(store / "schema.cedarschema", 29, "Bool", "Boo l")
    found = problems(store)
    assert len(found) == 1
    assert found[0].startswith("lending/schema.cedarschema:29: invalid schema: ")
