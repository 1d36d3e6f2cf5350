"""Tests of loading policy stores from disk: ids, diagnostics, settings and versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores import write_store
from verdict.errors import PolicyLoadError
from verdict.model import EntityUid
from verdict.policy.loader import load_policy_stores, load_store
from verdict.policy.snapshot import ErrorMode, ValidationMode

SCHEMA = (
    "entity User { suspended: Bool }; entity Doc;\n"
    "action view appliesTo { principal: User, resource: Doc };"
)


def diagnostics_of(root: Path) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_store(root)
    return [str(d) for d in info.value.diagnostics]


def test_ids_come_from_annotation_or_file_position(tmp_path: Path) -> None:
    """@id wins; otherwise the id is the relative path without .cedar, '#', and the position."""
    root = write_store(
        tmp_path,
        "s",
        {
            "loans/approval.cedar": "permit(principal, action, resource);\n"
            '@id("named") permit(principal, action, resource);\n'
            "forbid(principal, action, resource) when { false };",
        },
    )
    store = load_store(root)
    assert list(store.policies) == ["loans/approval#0", "named", "loans/approval#2"]
    assert store.policies["loans/approval#2"].location == "s/loans/approval.cedar:3"
    assert store.policies["loans/approval#2"].effect == "forbid"


def test_files_load_in_sorted_path_order(tmp_path: Path) -> None:
    """Policies are ordered by relative file path, then by position."""
    root = write_store(
        tmp_path,
        "s",
        {
            "b.cedar": "permit(principal, action, resource);",
            "a/z.cedar": "permit(principal, action, resource);",
            "a.cedar": "permit(principal, action, resource);",
        },
    )
    assert list(load_store(root).policies) == ["a#0", "a/z#0", "b#0"]


def test_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    """A broken policy names the file and the line it starts on."""
    root = write_store(
        tmp_path,
        "s",
        {
            "p.cedar": "permit(principal, action, resource);\n\n\n"
            "permit(principal, actoin, resource);",
        },
    )
    (message,) = diagnostics_of(root)
    assert message.startswith("s/p.cedar:4: syntax error")
    assert "actoin" in message


def test_duplicate_ids_refuse_to_load(tmp_path: Path) -> None:
    """Two policies with one @id stop the store, naming both places."""
    root = write_store(
        tmp_path,
        "s",
        {
            "a.cedar": '@id("x") permit(principal, action, resource);',
            "b.cedar": '\n@id("x") forbid(principal, action, resource);',
        },
    )
    (message,) = diagnostics_of(root)
    assert message == "s/b.cedar:2: duplicate policy id 'x' (first defined at s/a.cedar:1)"


def test_empty_id_annotation_is_rejected(tmp_path: Path) -> None:
    """An empty @id cannot identify a policy."""
    root = write_store(tmp_path, "s", {"a.cedar": '@id("") permit(principal, action, resource);'})
    assert diagnostics_of(root) == ["s/a.cedar:1: @id annotation must not be empty"]


def test_schema_validation_failure_is_located(tmp_path: Path) -> None:
    """Under strict validation a policy that fails the schema refuses to load, at the line of
    the fault (3, where `principal.nope` is; the policy starts at its @id on line 2)."""
    root = write_store(
        tmp_path,
        "s",
        {
            "schema.cedarschema": SCHEMA,
            "p.cedar": 'permit(principal, action == Action::"view", resource);\n'
            '@id("bad")\npermit(principal, action, resource) when { principal.nope };',
        },
    )
    (message,) = diagnostics_of(root)
    assert message.startswith("s/p.cedar:3: policy 'bad' fails schema validation: ")
    assert "nope" in message
    assert "policy1" not in message


def test_validation_off_loads_invalid_policies(tmp_path: Path) -> None:
    """validation = "off" keeps the schema for evaluation but does not validate policies."""
    root = write_store(
        tmp_path,
        "s",
        {
            "schema.cedarschema": SCHEMA,
            "store.toml": 'validation = "off"\n',
            "p.cedar": "permit(principal, action, resource) when { principal.nope };",
        },
    )
    store = load_store(root)
    assert store.settings.validation is ValidationMode.OFF
    assert store.schema is not None


def test_invalid_schema_is_reported(tmp_path: Path) -> None:
    """A schema that does not parse stops the store."""
    root = write_store(
        tmp_path,
        "s",
        {"schema.cedarschema": "entity User {", "p.cedar": "permit(principal, action, resource);"},
    )
    (message,) = diagnostics_of(root)
    assert message.startswith("s/schema.cedarschema:1: invalid schema")


def test_both_schema_forms_is_an_error(tmp_path: Path) -> None:
    """A store must not have both a text and a JSON schema."""
    root = write_store(
        tmp_path, "s", {"schema.cedarschema": SCHEMA, "schema.cedarschema.json": "{}"}
    )
    assert "keep one" in diagnostics_of(root)[0]


def test_json_schema_is_accepted(tmp_path: Path) -> None:
    """schema.cedarschema.json is parsed as Cedar's JSON schema format."""
    schema = (
        '{"": {"entityTypes": {"User": {}}, "actions": {"view": {"appliesTo": '
        '{"principalTypes": ["User"], "resourceTypes": ["User"]}}}}}'
    )
    root = write_store(
        tmp_path,
        "s",
        {"schema.cedarschema.json": schema, "p.cedar": "permit(principal, action, resource);"},
    )
    assert load_store(root).settings.validation is ValidationMode.STRICT


def test_store_settings_are_read_and_checked(tmp_path: Path) -> None:
    """store.toml sets the error mode; unknown keys and bad values are located errors."""
    skip = 'on_evaluation_error = "skip"\n'
    good = write_store(tmp_path, "good", {"store.toml": skip, "schema.cedarschema": SCHEMA})
    assert load_store(good).settings.on_evaluation_error is ErrorMode.SKIP
    bad = write_store(
        tmp_path,
        "bad",
        {"store.toml": 'on_evaluation_error = "allow"\ncolour = "red"\nvalidation = "strict"\n'},
    )
    assert diagnostics_of(bad) == [
        "bad/store.toml:2: unknown setting 'colour'; known: "
        "['audit_context', 'entities_source', 'on_evaluation_error', 'request_entity_types', "
        "'validation']",
        'bad/store.toml:3: validation = "strict" needs a schema file',
        'bad/store.toml:1: on_evaluation_error must be "deny" | "skip"',
    ]


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    """The version is stable for equal content and changes with policies or settings."""
    files: dict[str, str | list[object]] = {"p.cedar": "permit(principal, action, resource);"}
    first = load_store(write_store(tmp_path / "1", "s", files)).version
    again = load_store(write_store(tmp_path / "2", "s", files)).version
    edited = load_store(
        write_store(tmp_path / "3", "s", {"p.cedar": "forbid(principal, action, resource);"})
    ).version
    with_settings = load_store(
        write_store(tmp_path / "4", "s", {**files, "store.toml": 'on_evaluation_error = "deny"'})
    ).version
    assert first == again
    assert len({first, edited, with_settings}) == 3


def test_literal_uids_are_collected(tmp_path: Path) -> None:
    """Uids named in scopes and conditions are remembered for entity slicing."""
    root = write_store(
        tmp_path,
        "s",
        {
            "p.cedar": (
                'permit(principal in Group::"admins",'
                ' action in [Action::"a", Action::"b"], resource)'
                ' when { resource in Folder::"top\\"q" || principal == User::"root" };'
            )
        },
    )
    assert load_store(root).literal_uids == {
        EntityUid("Group", "admins"),
        EntityUid("Action", "a"),
        EntityUid("Action", "b"),
        EntityUid("Folder", 'top"q'),
        EntityUid("User", "root"),
    }


def test_every_store_is_checked_and_default_resolved(tmp_path: Path) -> None:
    """Problems of all stores are reported together; a named default store must exist."""
    write_store(tmp_path, "a", {"p.cedar": "permit(principal, action, resource"})
    write_store(tmp_path, "b", {"p.cedar": "nonsense;"})
    with pytest.raises(PolicyLoadError) as info:
        load_policy_stores(tmp_path)
    assert [d.file for d in info.value.diagnostics] == ["a/p.cedar", "b/p.cedar"]
    (tmp_path / "a" / "p.cedar").write_text("permit(principal, action, resource);")
    (tmp_path / "b" / "p.cedar").write_text("permit(principal, action, resource);")
    assert load_policy_stores(tmp_path).default_store == ""
    with pytest.raises(PolicyLoadError, match="'c' is not one of"):
        load_policy_stores(tmp_path, "c")
    assert load_policy_stores(tmp_path, "b").default_store == "b"


def test_sample_lending_store_loads() -> None:
    """The shipped sample store loads strictly with every policy annotated."""
    store = load_store(Path(__file__).resolve().parents[2] / "policies" / "lending")
    assert 15 <= len(store.policies) <= 30
    assert all(not pid.startswith(("policy", "lending")) for pid in store.policies)
    assert all(p.description for p in store.policies.values())
    assert store.settings.validation is ValidationMode.STRICT


@pytest.mark.parametrize(
    "empty",
    [
        "guards/guard.cedar",
        "schema.cedarschema",
        "store.toml",
        "links.json",
        "entities.json",
    ],
)
def test_an_empty_store_file_is_refused_by_name(tmp_path: Path, empty: str) -> None:
    """Zero bytes is what every in-place rewrite shows for an instant (truncate, then write):
    an empty policy file is valid Cedar and had served the store without its forbids. Any
    empty store file is refused, naming the file; the store loads with it deleted."""
    files: dict[str, str | list[Any]] = {
        "main.cedar": 'permit(principal, action == Action::"view", resource);',
        "guards/keep.cedar": "forbid(principal, action, resource) when { principal.suspended };",
        "schema.cedarschema": SCHEMA,
        empty: "",
    }
    root = write_store(tmp_path, "s", files)
    if empty == "entities.json":
        from verdict.store.entity_file import read_entities_file

        load_store(root)  # the policies are fine; the entities file is read by its own reader
        with pytest.raises(PolicyLoadError) as info:
            read_entities_file(root / empty, None, f"s/{empty}")
        problems = [str(d) for d in info.value.diagnostics]
    else:
        problems = diagnostics_of(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"s/{empty}")
    assert "empty file, refused" in problems[0]
    (root / empty).unlink()
    assert "guards/keep#0" in load_store(root).policies


@pytest.mark.parametrize(
    "linked", ["guards/guard.cedar", "schema.cedarschema", "store.toml", "links.json"]
)
def test_a_store_file_linked_outside_the_stores_folder_is_refused_unread(
    tmp_path: Path, linked: str
) -> None:
    """A store file that is a link to a secret of the server's (a key, a token) was read,
    and Cedar's syntax error quoted its first token in the log and in ReloadPolicies' answer.
    Now it is refused by name, and nothing of the secret appears."""
    secret = tmp_path / "outside" / "audit.key"
    secret.parent.mkdir()
    secret.write_text("hunter2 TOPSECRET_TOKEN=abc123\n")
    stores = tmp_path / "stores"
    root = write_store(stores, "s", {"main.cedar": "permit(principal, action, resource);"})
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    (root / linked).symlink_to(secret)
    problems = diagnostics_of(root)
    assert problems == [f"s/{linked}:0: a link to a file outside the store folder, refused"]
    assert not any("hunter2" in p or "TOPSECRET" in p for p in problems)


def test_configmap_links_load_and_links_out_of_the_store_folder_are_refused(
    tmp_path: Path,
) -> None:
    """What Kubernetes does keeps working: a ConfigMap mounted on a store folder (files are
    links to ``..data/``, a link to a timestamped folder inside it), and one mounted on the
    stores folder (each store folder a link to ``..data/<store>``). A file linked to another
    store's folder (a shared file, or another tenant's data: round 11) is refused, and so is
    a store folder linked to a folder outside the stores folder (it chose what its files may
    resolve to: ``stores/evil -> ..``)."""
    stores = tmp_path / "stores"
    root = write_store(stores, "s", {"..2026/main.cedar": "permit(principal, action, resource);"})
    (root / "..data").symlink_to("..2026")
    (root / "main.cedar").symlink_to("..data/main.cedar")
    write_store(stores, "..2027", {"t/p.cedar": "permit(principal, action, resource);"})
    (stores / "..data").symlink_to("..2027")
    (stores / "t").symlink_to("..data/t")
    snapshot = load_policy_stores(stores)
    assert set(snapshot.stores) == {"s", "t"}
    assert list(snapshot.stores["s"].policies) == ["main#0"]  # not ..2026/main#0 as well
    (root / ".shared").mkdir()  # a hidden folder of one's own is read: never dropped silently
    (root / ".shared" / "guard.cedar").write_text("forbid(principal, action, resource);")
    assert list(load_store(root).policies) == [".shared/guard#0", "main#0"]
    (root / ".shared" / "guard.cedar").unlink()
    assert list(snapshot.stores["t"].policies) == ["p#0"]

    (root / "guard.cedar").symlink_to(stores / "t" / "p.cedar")
    assert diagnostics_of(root) == [
        "s/guard.cedar:0: a link to a file outside the store folder, refused"
    ]
    checkout = write_store(
        tmp_path / "checkout", "u", {"p.cedar": "permit(principal, action, resource);"}
    )
    (stores / "u").symlink_to(checkout)
    assert diagnostics_of(stores / "u") == [
        "u:0: the store folder is a link to a folder outside the stores folder, refused"
    ]
    (stores / "evil").symlink_to("..")
    assert diagnostics_of(stores / "evil") == [
        "evil:0: the store folder is a link to a folder outside the stores folder, refused"
    ]


def test_an_entities_file_linked_outside_the_stores_folder_is_refused_unread(
    tmp_path: Path,
) -> None:
    """The embedded store reads entities.json under the same rule (reload and start)."""
    from verdict.store.memory import EntityFile, MemoryEntityStore

    secret = tmp_path / "secret.json"
    secret.write_text('[{"uid": {"type": "User", "id": "TOPSECRET"}, "attrs": {}, "parents": []}]')
    root = write_store(
        tmp_path / "stores", "s", {"p.cedar": "permit(principal, action, resource);"}
    )
    (root / "entities.json").symlink_to(secret)
    with pytest.raises(PolicyLoadError) as info:
        MemoryEntityStore.read_file(EntityFile(root / "entities.json", None, "s/entities.json"))
    assert [str(d) for d in info.value.diagnostics] == [
        "s/entities.json:0: invalid entities: a link to a file outside the store folder, refused"
    ]
