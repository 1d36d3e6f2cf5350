"""Tests of loading policy test suites: located cases, malformed suites, stores, entities, time."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.stores import entity, write_store
from verdict.model import EntityUid
from verdict.policy.loader import load_policy_stores
from verdict.policytest.loader import Plan, SuiteLoadError, discover, load_plan

TEAM_SCHEMA = """
entity Team;
entity User in [Team] = { active: Bool };
entity Doc = { owner: User, secret: Bool };
type Ctx = { now: datetime, mfa: Bool };
action read appliesTo { principal: [User], resource: [Doc], context: Ctx };
"""
TEAM_POLICIES = """
@id("owner-reads")
permit (principal, action == Action::"read", resource) when { resource.owner == principal };

@id("team-reads")
permit (principal in Team::"eng", action == Action::"read", resource)
when { !resource.secret };

@id("inactive-blocked")
forbid (principal, action, resource) unless { principal.active };

@id("night-blocked")
forbid (principal, action, resource) when { context.now.toTime() >= duration("22h") };
"""
TEAM_ENTITIES = [
    entity("Team", "eng"),
    entity("User", "ann", {"active": True}, [("Team", "eng")]),
    entity("User", "bob", {"active": True}),
    entity("User", "cid", {"active": False}, [("Team", "eng")]),
    entity("Doc", "plan", {"owner": {"type": "User", "id": "bob"}, "secret": False}),
    entity("Doc", "diary", {"owner": {"type": "User", "id": "bob"}, "secret": True}),
]
TEAM_POLICY_IDS = ["owner-reads", "team-reads", "inactive-blocked", "night-blocked"]


def team_store(stores: Path, name: str = "team", *, schema: bool = True) -> Path:
    """Write the small ``team`` store used by the policytest tests."""
    files: dict[str, Any] = {
        "policies.cedar": TEAM_POLICIES,
        "entities.json": TEAM_ENTITIES,
        # Suites send new documents as request entities.
        "store.toml": 'request_entity_types = ["Doc"]\n',
    }
    if schema:
        files["schema.cedarschema"] = TEAM_SCHEMA
    return write_store(stores, name, files)


def write_suite(folder: Path, name: str, text: str) -> Path:
    """Write a suite file (YAML text is dedented) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(stores: Path, *paths: Path, default_store: str | None = None) -> Plan:
    """Load policies and the given suites (or every store's tests/) the way the CLI does."""
    names = sorted(p.name for p in stores.iterdir() if p.is_dir())
    snapshot = load_policy_stores(stores, default_store or names[0])
    return load_plan(discover(list(paths), stores, snapshot), snapshot, stores, default_store)


def problems(stores: Path, *paths: Path) -> list[str]:
    """The diagnostics a load raises, as ``file:line: message`` strings with bare file names."""
    with pytest.raises(SuiteLoadError) as caught:
        load(stores, *paths)
    return [f"{Path(d.file).name}:{d.line}: {d.message}" for d in caught.value.diagnostics]


CASE = """\
  - name: ann reads the plan
    principal: User::ann
    action: Action::read
    resource: Doc::plan
    expect: allow
"""


def test_cases_keep_the_line_where_each_case_starts(tmp_path: Path) -> None:
    """Every case records the 1-based line of its first key in the YAML file."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path / "team" / "tests",
        "a.yaml",
        "name: s\ncontext: {mfa: true}\n"
        "now: '2025-01-01T10:00:00Z'\ncases:\n"
        + CASE
        + "\n"
        + CASE.replace("ann reads", "ann reads again"),
    )
    plan = load(tmp_path, suite)
    assert [c.line for c in plan.cases] == [5, 11]
    assert plan.cases[0].file.endswith("team/tests/a.yaml")


def test_json_suites_get_line_numbers_too(tmp_path: Path) -> None:
    """A JSON suite's cases carry the line of their opening brace."""
    team_store(tmp_path)
    case = {
        "principal": "User::ann",
        "action": "Action::read",
        "resource": "Doc::plan",
        "context": {"mfa": True, "now": "2025-01-01T10:00:00Z"},
        "expect": "allow",
    }
    document = {"name": "s", "cases": [{"name": "one", **case}, {"name": "two", **case}]}
    suite = write_suite(tmp_path / "team" / "tests", "a.json", json.dumps(document, indent=2))
    lines = suite.read_text().splitlines()
    expected = [i + 1 for i, text in enumerate(lines) if text.strip() == "{"][1:]
    assert [c.line for c in load(tmp_path, suite).cases] == expected


def test_unknown_keys_are_reported_with_their_line_and_the_allowed_keys(tmp_path: Path) -> None:
    """A misspelt key fails the load at its own line, listing what is allowed there."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: s
        store: team
        cases:
          - name: typo
            principal: User::ann
            action: Action::read
            resource: Doc::plan
            expct: allow
        """,
    )
    found = problems(tmp_path, suite)
    assert len(found) == 2
    assert "s.yaml:4: cases[0].expect: required key is missing" in found
    unknown = next(f for f in found if "expct" in f)
    assert unknown.startswith("s.yaml:8: cases[0].expct: unknown key (allowed here: name,")
    assert unknown.endswith("entities, expect)")


def test_bad_uids_are_reported_at_their_line(tmp_path: Path) -> None:
    """A uid without ``::`` or a uid mapping with extra keys is a load error on its line."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: s
        store: team
        cases:
          - name: bad
            principal: ann
            action: {type: Action, id: read, extra: 1}
            resource: Doc::plan
            expect: allow
        """,
    )
    assert problems(tmp_path, suite) == [
        's.yaml:5: cases[0].principal: must be written TYPE::"ID" or TYPE::ID, '
        'e.g. Loan::"loan-1001" or Loan::loan-1001',
        's.yaml:6: cases[0].action: must be TYPE::"ID", TYPE::ID or '
        '{"type": <type name>, "id": <string>}',
    ]


def test_uids_split_at_the_last_separator_and_keep_the_id_verbatim(tmp_path: Path) -> None:
    """``A::B::c d"e`` is type ``A::B`` with id ``c d"e``; the mapping form is taken as is."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: s
        store: team
        context: {mfa: true, now: "2025-01-01"}
        cases:
          - name: odd ids
            principal: 'Ns::User::c d"e'
            action: {type: Action, id: "re::ad"}
            resource: Doc::plan
            expect: invalid
        """,
    )
    request = load(tmp_path, suite).cases[0].request
    assert request.principal == EntityUid("Ns::User", 'c d"e')
    assert request.action == EntityUid("Action", "re::ad")


def test_missing_files_are_reported(tmp_path: Path) -> None:
    """A suite path that does not exist, or an entities file that does not, is a clear error."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path, "s.yaml", "name: s\nstore: team\nentities: nope.json\ncases:\n" + CASE
    )
    assert problems(tmp_path, suite) == ["s.yaml:3: entities file 'nope.json' not found"]
    assert problems(tmp_path, tmp_path / "absent.yaml") == ["absent.yaml:0: no such file or folder"]


def test_syntax_errors_and_duplicate_keys_name_the_line(tmp_path: Path) -> None:
    """Broken YAML/JSON and duplicate keys are reported with the line of the problem."""
    team_store(tmp_path)
    broken = write_suite(tmp_path, "a.yaml", "name: s\ncases: [\n")
    duplicate = write_suite(tmp_path, "b.yaml", "name: s\nname: t\ncases: []\n")
    bad_json = write_suite(tmp_path, "c.json", '{\n  "name": "s",\n  "cases": [,]\n}\n')
    found = problems(tmp_path, broken, duplicate, bad_json)
    assert found[0].startswith("a.yaml:3: invalid YAML")
    assert found[1] == "b.yaml:2: invalid YAML: duplicate key 'name'"
    assert found[2].startswith("c.json:3: invalid JSON")


def test_expected_policy_ids_must_exist_in_the_store(tmp_path: Path) -> None:
    """A typo in an expected policy id is caught at load time, not reported as a failure."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        "name: s\nstore: team\ncases:\n"
        + CASE.replace("expect: allow", "expect: {decision: allow, policies: [team-read]}"),
    )
    assert problems(tmp_path, suite) == [
        "s.yaml:8: unknown policy ids ['team-read'] in store 'team'"
    ]


def test_other_malformed_suites_are_rejected(tmp_path: Path) -> None:
    """Unknown stores, duplicate case names, floats, bad times and contradictions are errors."""
    team_store(tmp_path)
    unknown_store = write_suite(tmp_path, "a.yaml", "name: s\nstore: nope\ncases:\n" + CASE)
    twice = write_suite(tmp_path, "b.yaml", "name: s\nstore: team\ncases:\n" + CASE + CASE)
    floats = write_suite(
        tmp_path, "c.yaml", "name: s\nstore: team\ncontext: {x: 1.5}\ncases:\n" + CASE
    )
    bad_time = write_suite(
        tmp_path, "d.yaml", "name: s\nstore: team\nnow: 2025-1-1\ncases:\n" + CASE
    )
    both = write_suite(
        tmp_path,
        "e.yaml",
        "name: s\nstore: team\ncases:\n"
        + CASE.replace(
            "expect: allow",
            "now: '2025-01-01'\n    context: {now: '2025-01-02'}\n    expect: allow",
        ),
    )
    invalid_with_policies = write_suite(
        tmp_path,
        "f.yaml",
        "name: s\nstore: team\ncases:\n"
        + CASE.replace("expect: allow", "expect: {decision: invalid, policies: []}"),
    )
    found = problems(tmp_path, unknown_store, twice, floats, bad_time, both, invalid_with_policies)
    assert found[0] == "a.yaml:2: store 'nope' is not one of ['team']"
    assert found[1] == "b.yaml:9: duplicate case name 'ann reads the plan'"
    assert found[2] == 'c.yaml:3: context: Cedar has no floats (use decimal("..."))'
    assert found[3].startswith("d.yaml:3: now: String should match pattern")
    assert found[4] == "e.yaml:8: set the time once: now: or context.now, not both"
    assert found[5] == (
        "f.yaml:8: cases[0].expect: an invalid request has no determining policies or errors"
    )


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    """Loading continues past a broken file, so one run lists all problems."""
    team_store(tmp_path)
    first = write_suite(tmp_path, "a.yaml", "name: s\nstore: team\ncases: []\n")
    second = write_suite(tmp_path, "b.yaml", "store: team\ncases:\n" + CASE)
    assert problems(tmp_path, first, second) == [
        "a.yaml:3: cases: List should have at least 1 item after validation, not 0",
        "b.yaml:1: name: required key is missing",
    ]


def test_the_store_comes_from_the_folder_the_key_or_the_only_store(tmp_path: Path) -> None:
    """A suite under <store>/tests/ runs against that store; elsewhere ``store:`` names it."""
    stores = tmp_path / "stores"
    team_store(stores, "alpha")
    team_store(stores, "beta")
    in_folder = write_suite(stores / "beta" / "tests", "a.yaml", "name: s\ncases:\n" + CASE)
    named = write_suite(tmp_path / "elsewhere", "b.yaml", "name: t\nstore: alpha\ncases:\n" + CASE)
    unnamed = write_suite(tmp_path / "elsewhere", "c.yaml", "name: u\ncases:\n" + CASE)
    plan = load(stores, in_folder, named)
    assert [s.store_id for s in plan.suites] == ["beta", "alpha"]
    assert problems(stores, unnamed) == [
        "c.yaml:1: several stores ['alpha', 'beta']: name one with store: or --store"
    ]
    assert load(stores, unnamed, default_store="beta").suites[0].store_id == "beta"


def test_discovery_finds_every_store_tests_folder_but_not_entity_files(tmp_path: Path) -> None:
    """Without paths, suites are every YAML/JSON file below each store's tests/ folder."""
    team_store(tmp_path)
    tests = tmp_path / "team" / "tests"
    write_suite(tests, "a.yaml", "name: a\ncases:\n" + CASE)
    write_suite(tests / "nested", "b.yml", "name: b\ncases:\n" + CASE)
    write_suite(tests, "people.entities.json", json.dumps(TEAM_ENTITIES))
    write_suite(tests, "notes.txt", "not a suite")
    assert [s.name for s in load(tmp_path).suites] == ["a", "b"]


def test_time_pinning_fills_the_time_attribute(tmp_path: Path) -> None:
    """``now:`` fills the suite's time attribute; a case's ``now:`` overrides the suite's."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: s
        store: team
        context: {mfa: true}
        now: 2025-01-01T10:00:00Z
        time_attribute: when
        cases:
          - {name: a, principal: User::ann, action: Action::read, resource: Doc::plan,
             expect: allow}
          - {name: b, principal: User::ann, action: Action::read, resource: Doc::plan,
             now: "2025-01-01T23:00:00+0100", expect: allow}
        """,
    )
    contexts = [c.request.context for c in load(tmp_path, suite).cases]
    assert contexts == [
        {"mfa": True, "when": "2025-01-01T10:00:00Z"},
        {"mfa": True, "when": "2025-01-01T23:00:00+0100"},
    ]


def test_without_a_schema_the_pinned_time_is_an_explicit_datetime(tmp_path: Path) -> None:
    """Cedar needs ``__extn`` for a datetime when no schema types the attribute."""
    team_store(tmp_path, schema=False)
    suite = write_suite(
        tmp_path, "s.yaml", "name: s\nstore: team\nnow: '2025-01-01'\ncases:\n" + CASE
    )
    context = load(tmp_path, suite).cases[0].request.context
    assert context == {"now": {"__extn": {"fn": "datetime", "arg": "2025-01-01"}}}


def test_a_null_in_a_case_context_removes_the_suite_default(tmp_path: Path) -> None:
    """Case context is merged over the suite's; ``null`` deletes an attribute."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        "name: s\nstore: team\ncontext: {mfa: true, x: 1}\n"
        "cases:\n" + CASE.replace("expect: allow", "context: {mfa: null, y: 2}\n    expect: allow"),
    )
    assert load(tmp_path, suite).cases[0].request.context == {"x": 1, "y": 2}


def test_suite_entities_replace_the_store_entities(tmp_path: Path) -> None:
    """Inline entities and entity files are loaded for their suite only, checked by schema."""
    team_store(tmp_path)
    inline = write_suite(
        tmp_path,
        "a.json",
        json.dumps(
            {
                "name": "inline",
                "store": "team",
                "entities": TEAM_ENTITIES[:2],
                "cases": [
                    {
                        "name": "c",
                        "principal": "User::ann",
                        "action": "Action::read",
                        "resource": "Doc::plan",
                        "expect": "deny",
                    }
                ],
            }
        ),
    )
    write_suite(tmp_path, "few.entities.json", json.dumps(TEAM_ENTITIES[:3]))
    from_file = write_suite(
        tmp_path, "b.yaml", "name: file\nstore: team\nentities: few.entities.json\ncases:\n" + CASE
    )
    plan = load(tmp_path, inline, from_file)
    sizes = sorted(len(entities) for _, entities in plan.entity_sets.values())
    assert sizes == [2, 3]
    bad = write_suite(
        tmp_path,
        "c.json",
        json.dumps(
            {
                "name": "bad",
                "store": "team",
                "entities": [entity("User", "x", {"active": "yes"})],
                "cases": [
                    {
                        "name": "c",
                        "principal": "User::x",
                        "action": "Action::read",
                        "resource": "Doc::plan",
                        "expect": "deny",
                    }
                ],
            },
            indent=2,
        ),
    )
    assert problems(tmp_path, bad)[0].startswith(
        "c.json:4: entities: entity does not conform to the schema: in attribute `active`"
    )


def test_yaml_timestamps_stay_strings_and_merge_keys_work(tmp_path: Path) -> None:
    """Unquoted times are not turned into datetime objects, and ``<<:`` merges shared fields."""
    team_store(tmp_path)
    suite = write_suite(
        tmp_path,
        "s.yaml",
        """
        name: s
        store: team
        context: {mfa: true}
        cases:
          - &ann
            name: first
            principal: User::ann
            action: Action::read
            resource: Doc::plan
            now: 2025-01-01T10:00:00Z
            expect: allow
          - <<: *ann
            name: second
            expect: {decision: deny}
        """,
    )
    cases = load(tmp_path, suite).cases
    assert [c.request.context["now"] for c in cases] == ["2025-01-01T10:00:00Z"] * 2
    assert [(c.name, c.line, c.expected.decision) for c in cases] == [
        ("first", 5, "allow"),
        ("second", 12, "deny"),
    ]
