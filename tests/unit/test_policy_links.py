"""Template links: linked policies behave like static ones; every bad link refuses the store with
the links file's line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from verdict.engine.evaluate import evaluate
from verdict.errors import PolicyLoadError
from verdict.model import AuthorizationRequest, EntityUid
from verdict.policy.loader import load_store
from verdict.store.entity_file import read_entities_file

TEMPLATE = "escalated-loan-view"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the lending store (which has one template and one link)."""
    root = tmp_path / "lending"
    shutil.copytree(POLICIES / "lending", root)
    return root


def write_links(root: Path, links: object, name: str = "links.json") -> None:
    """Replace the store's links file with ``links`` (JSON unless ``name`` says YAML)."""
    (root / "links.json").unlink(missing_ok=True)
    text = json.dumps(links, indent=2) if name.endswith(".json") else str(links)
    (root / name).write_text(text)


def problems(root: Path) -> list[str]:
    """The diagnostics loading ``root`` gives, as ``file:line: message``."""
    with pytest.raises(PolicyLoadError) as refused:
        load_store(root)
    return [str(d) for d in refused.value.diagnostics]


def link(link_id: str, **values: str) -> dict[str, object]:
    """A link of the escalation template."""
    return {"id": link_id, "template": TEMPLATE, "values": values}


def test_a_link_is_a_policy_with_its_own_id_and_location(store: Path) -> None:
    """The sample link loads as a non-template policy named by its id, at its line."""
    snapshot = load_store(store)
    info = snapshot.policies["escalation-4711-sophie-loan-1003"]
    assert (info.file, info.line, info.effect, info.is_template) == (
        "lending/links.json",
        2,
        "permit",
        False,
    )
    assert snapshot.policies[TEMPLATE].is_template


def test_a_linked_policy_decides_like_a_static_one(store: Path) -> None:
    """A link of sophie to loan-1004 allows her view outside business hours, and is reported
    as the determining policy; the template alone allows nothing."""
    write_links(
        store,
        [link("esc-1", **{"?principal": 'Employee::"sophie"', "?resource": 'Loan::"loan-1004"'})],
    )
    snapshot = load_store(store)
    entities = read_entities_file(store / "entities.json", snapshot.schema, "entities.json")
    context = {**lending_cases()[0].context, "now": "2025-03-04T20:00:00Z"}
    request = AuthorizationRequest(
        EntityUid("Employee", "sophie"),
        EntityUid("Action", "view"),
        EntityUid("Loan", "loan-1004"),
        context,
    )
    result = evaluate(request, snapshot, [e.json for e in entities.values()])
    assert result.allowed
    assert list(result.determining_policies) == ["esc-1"]


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ([{"id": "x", "template": "nope", "values": {}}], "template 'nope' is not a template"),
        (
            [{"id": "x", "template": "staff-view-partner-loans", "values": {}}],
            "is not a template of this store",
        ),
        ([link("x", **{"?principal": 'Employee::"sophie"'})], "no value for slot ?resource"),
        (
            [
                link(
                    "x",
                    **{
                        "?principal": 'Employee::"a"',
                        "?resource": 'Loan::"b"',
                        "?context": 'X::"c"',
                    },
                )
            ],
            "has no slot ?context",
        ),
        (
            [link("x", **{"?principal": "sophie", "?resource": 'Loan::"b"'})],
            "?principal must be a uid",
        ),
        (
            [link("staff-view-partner-loans", **{"?principal": 'E::"a"', "?resource": 'L::"b"'})],
            "is already a policy id (lending/staff.cedar:3)",
        ),
        ([{"id": "", "template": TEMPLATE, "values": {}}], "id must be a non-empty string"),
        ([{"id": "x", "template": TEMPLATE, "values": {}, "note": 1}], "unknown key 'note'"),
        ({"id": "x"}, "must be a list of links"),
    ],
)
def test_bad_links_refuse_the_store_at_their_line(
    store: Path, links: object, expected: str
) -> None:
    """Each kind of bad link is a load error on the links file, at the entry's line."""
    write_links(store, links)
    found = problems(store)
    assert any(p.startswith("lending/links.json:") and expected in p for p in found), found
    line = int(next(p for p in found if expected in p).split(":")[1])
    assert line in (1, 2)


def test_duplicate_link_ids_name_both_lines(store: Path) -> None:
    """The second link with an id already used is refused at its own line, naming the first."""
    values = {"?principal": 'Employee::"sophie"', "?resource": 'Loan::"loan-1004"'}
    write_links(store, [link("dup", **values), link("dup", **values)])
    found = problems(store)
    assert any("duplicate link id 'dup' (first at line 2)" in p for p in found), found
    assert any(p.startswith("lending/links.json:10:") for p in found), found


def test_yaml_links_with_lines(store: Path) -> None:
    """links.yaml works the same, and its errors carry YAML lines."""
    text = (
        "# escalations\n"
        "- id: esc-yaml\n"
        f"  template: {TEMPLATE}\n"
        "  values: {'?principal': 'Employee::\"sophie\"', '?resource': 'Loan::\"loan-1004\"'}\n"
        "- id: esc-bad\n"
        "  template: missing\n"
        "  values: {}\n"
    )
    write_links(store, text, "links.yaml")
    found = problems(store)
    assert found == [
        "lending/links.yaml:5: link 'esc-bad': template 'missing' is not a template of this store"
    ]


def test_two_links_files_are_an_error(store: Path) -> None:
    """links.json and links.yaml together: which one counts would be a guess."""
    (store / "links.yaml").write_text("[]\n")
    assert any("one links file per store" in p for p in problems(store))


def test_links_change_the_store_version(store: Path) -> None:
    """Editing links.json changes the version the server reports (hot reload sees it)."""
    before = load_store(store).version
    write_links(store, [])
    assert load_store(store).version != before


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"?principal": 'Employe::"sophie"', "?resource": 'Loan::"loan-1003"'}, "Employe"),
        ({"?principal": 'Loan::"loan-1001"', "?resource": 'Loan::"loan-1003"'}, "fails schema"),
        ({"?principal": 'Employee::"sophie"', "?resource": 'Employee::"olivia"'}, "fails schema"),
    ],
    ids=["unknown-type", "resource-type-as-principal", "principal-type-as-resource"],
)
def test_strict_validation_refuses_a_link_as_it_would_the_policy_written_out(
    store: Path, values: dict[str, str], expected: str
) -> None:
    """Under ``validation = "strict"`` a link is validated as the static policy it creates: a
    type the schema lacks, or one its slot's actions never take, is a load error at its line
    (unchecked, a link with a typo loaded and never matched anyone)."""
    write_links(store, [link("escalation-typo", **values)])
    found = problems(store)
    assert any(
        p.startswith("lending/links.json:2: link 'escalation-typo' fails schema validation")
        and expected in p
        for p in found
    ), found
