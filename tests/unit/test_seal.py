"""Sealed stores (policy/seal.py): a store loads only while its files match its store.seal."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.stores import lending_copy, write_store
from verdict.app import entity_file
from verdict.errors import PolicyLoadError
from verdict.policy.loader import REQUIRED_SEAL, load_store, sealable_digests, store_version
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.reload import Change, reload_stores
from verdict.policy.seal import SEAL_FILE, digest_of, read_seal, write_seal
from verdict.policy.snapshot import PolicySnapshot
from verdict.store.entity_file import read_entities_file
from verdict.store.memory import MemoryEntityStore

FORBID_ALICE = '@id("no-alice")\nforbid (principal == User::"alice", action, resource);\n'
PERMIT_ALL = "permit (principal, action, resource);\n"
ZEROS = "sha256:" + "0" * 64


def seal_text(name: str, digest: str = ZEROS) -> str:
    """A seal naming one file."""
    return json.dumps({"verdict_seal": 1, "files": {name: digest}})


def seal(root: Path) -> dict[str, str]:
    """Seal ``root`` as ``verdict seal`` does; the digests written."""
    found = sealable_digests(root, lambda store: MemoryEntityStore.read_file(entity_file(store)))
    write_seal(root, found)
    return found


def docs(tmp_path: Path) -> Path:
    """A small schema-less store "docs" (permit-all, a forbid of alice, entities, settings)."""
    return write_store(
        tmp_path / "stores",
        "docs",
        {
            "store.toml": 'validation = "off"\n',
            "docs.cedar": PERMIT_ALL,
            "guard/alice.cedar": FORBID_ALICE,
            "entities.json": [{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}],
        },
    )


def problems(root: Path, *, require_seal: bool = False) -> list[str]:
    with pytest.raises(PolicyLoadError) as caught:
        load_store(root, require_seal=require_seal)
    return [str(d) for d in caught.value.diagnostics]


def test_a_sealed_store_loads_and_says_so(tmp_path: Path) -> None:
    root = docs(tmp_path)
    written = seal(root)
    assert set(written) == {"store.toml", "docs.cedar", "guard/alice.cedar", "entities.json"}
    assert written["guard/alice.cedar"] == digest_of(FORBID_ALICE.encode())
    loaded = load_store(root)
    assert loaded.sealed
    assert loaded.sealed_entities == written["entities.json"]
    assert set(loaded.policies) == {"docs#0", "no-alice"}


def test_an_unsealed_store_loads_unless_a_seal_is_required(tmp_path: Path) -> None:
    root = docs(tmp_path)
    assert not load_store(root).sealed
    assert problems(root, require_seal=True) == [f"docs/{SEAL_FILE}:0: {REQUIRED_SEAL}"]
    seal(root)
    assert load_store(root, require_seal=True).sealed


def _half_written(root: Path) -> None:
    # The half-done regeneration of round 16: the header written, the forbid not yet.
    (root / "guard/alice.cedar").write_text("// generated\n")


def _now_a_folder(root: Path) -> None:
    (root / "docs.cedar").unlink()
    (root / "docs.cedar").mkdir()


SKIP_ERRORS = 'validation = "off"\non_evaluation_error = "skip"\n'
EDITS: list[tuple[Callable[[Path], object], str, str]] = [
    (_half_written, "guard/alice.cedar", "does not match"),
    (lambda r: (r / "guard/alice.cedar").unlink(), "guard/alice.cedar", "is in store.seal but"),
    (lambda r: (r / "extra.cedar").write_text(PERMIT_ALL), "extra.cedar", "is not in store.seal"),
    (lambda r: (r / "links.json").write_text("[]"), "links.json", "is not in store.seal"),
    (lambda r: (r / "store.toml").write_text(SKIP_ERRORS), "store.toml", "does not match"),
    (lambda r: (r / "entities.json").write_text("[]"), "entities.json", "does not match"),
    (_now_a_folder, "docs.cedar", "does not match"),
]


@pytest.mark.parametrize(
    ("edit", "file", "what"),
    EDITS,
    ids=["half-written", "removed", "added", "links-added", "settings", "entities", "now-a-folder"],
)
def test_a_file_changed_after_the_seal_refuses_the_store_naming_it(
    tmp_path: Path, edit: Callable[[Path], object], file: str, what: str
) -> None:
    root = docs(tmp_path)
    seal(root)
    edit(root)
    found = problems(root)
    assert found[0].startswith(f"docs/{file}:0: {what}"), found
    assert "`verdict seal`" in found[0]


def test_a_file_of_a_nested_folder_is_sealed_by_its_relative_path(tmp_path: Path) -> None:
    """Moving a file between folders is a change: the same bytes under another path."""
    root = docs(tmp_path)
    seal(root)
    (root / "guard/alice.cedar").rename(root / "alice.cedar")
    assert {p.split(":")[0] for p in problems(root)} == {
        "docs/alice.cedar",
        "docs/guard/alice.cedar",
    }


def test_sealing_again_changes_the_version_so_a_reload_picks_the_store_up(tmp_path: Path) -> None:
    root = docs(tmp_path)
    before = store_version(root)
    seal(root)
    sealed = store_version(root)
    assert sealed != before
    (root / "guard/alice.cedar").write_text(FORBID_ALICE + "// reviewed\n")
    seal(root)
    assert store_version(root) not in (before, sealed)


def test_seal_refuses_a_store_that_does_not_load_and_writes_nothing(tmp_path: Path) -> None:
    root = docs(tmp_path)
    (root / "guard/alice.cedar").write_text("forbid (principal == User::, action, resource);\n")
    with pytest.raises(PolicyLoadError):
        seal(root)
    assert not (root / SEAL_FILE).exists()
    (root / "guard/alice.cedar").write_text(FORBID_ALICE)
    user = {"type": "User", "id": "a"}
    (root / "entities.json").write_text(json.dumps([{"uid": user, "attrs": {}, "parents": [user]}]))
    with pytest.raises(PolicyLoadError, match="cycle"):  # entities are checked too
        seal(root)
    assert not (root / SEAL_FILE).exists()


def test_seal_ignores_the_old_seal_and_replaces_it(tmp_path: Path) -> None:
    root = docs(tmp_path)
    seal(root)
    (root / "guard/alice.cedar").write_text(
        FORBID_ALICE + FORBID_ALICE.replace("no-alice", "no-alice-2")
    )
    problems(root)  # refused until sealed again
    seal(root)
    assert set(load_store(root).policies) == {"docs#0", "no-alice", "no-alice-2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "invalid seal: "),
        ('{"verdict_seal": 1, "files": {}, "files": {}}', "repeats a key"),
        ('{"verdict_seal": 2, "files": {}}', "verdict_seal must be 1"),
        ('{"verdict_seal": true, "files": {}}', "verdict_seal must be 1"),
        ('{"verdict_seal": 1, "files": {}, "signed": "x"}', 'must be {"verdict_seal": 1'),
        ('{"verdict_seal": 1, "files": []}', "files must be an object"),
        ("[1]", 'must be {"verdict_seal": 1'),
        (seal_text("../other/x.cedar"), "is not a relative path"),
        (seal_text("/etc/x.cedar"), "is not a relative path"),
        (seal_text("a//b.cedar"), "is not a relative path"),
        (seal_text("./a.cedar"), "is not a relative path"),
        (seal_text("a\0b.cedar"), "is not a relative path"),
        (seal_text("store.seal"), "is the seal itself"),
        (seal_text("a.cedar", "sha256:" + "A" * 64), "64 lowercase hex"),
        (seal_text("a.cedar", "md5:00"), "64 lowercase hex"),
        ('{"verdict_seal": 1, "files": {"a.cedar": 1}}', "64 lowercase hex"),
        ("", "invalid seal: empty file, refused"),
    ],
)
def test_an_unusable_seal_refuses_the_store_naming_the_seal(
    tmp_path: Path, text: str, problem: str
) -> None:
    root = docs(tmp_path)
    (root / SEAL_FILE).write_text(text)
    found = problems(root)
    assert len(found) == 1
    assert found[0].startswith(f"docs/{SEAL_FILE}:0: invalid seal"), found
    assert problem.lower() in found[0].lower(), found


def test_a_seal_that_is_a_folder_refuses_the_store(tmp_path: Path) -> None:
    root = docs(tmp_path)
    (root / SEAL_FILE).mkdir()
    assert any("store.seal" in p and "not a regular file" in p for p in problems(root))


def test_read_seal_gives_none_without_a_seal(tmp_path: Path) -> None:
    assert read_seal(docs(tmp_path)) is None


def test_the_seal_is_written_by_a_rename_and_reads_back(tmp_path: Path) -> None:
    root = docs(tmp_path)
    written = seal(root)
    document = json.loads((root / SEAL_FILE).read_text())
    assert document == {"verdict_seal": 1, "files": written}
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    found = read_seal(root)
    assert found is not None
    assert dict(found.files) == written


def test_entities_read_apart_from_the_load_are_held_to_the_seal(tmp_path: Path) -> None:
    """The embedded store reads entities.json after the load; a file swapped in between is
    refused on the bytes it parses."""
    root = docs(tmp_path)
    seal(root)
    loaded = load_store(root)
    (root / "entities.json").write_text("[]")
    with pytest.raises(PolicyLoadError, match=r"does not match store\.seal"):
        MemoryEntityStore.read_file(entity_file(loaded))
    with pytest.raises(PolicyLoadError, match=r"does not match store\.seal"):
        read_entities_file(
            root / "entities.json", None, "docs/entities.json", sealed=loaded.sealed_entities
        )
    assert read_entities_file(root / "entities.json", None, "docs/entities.json") == {}


def test_a_reload_keeps_the_last_good_version_until_the_store_is_sealed_again(
    tmp_path: Path,
) -> None:
    """Round 16's finding 3 on a sealed store: the generator's first write (`>`: the header
    alone) is refused by the reload; the append finishes the file, still refused; once sealed,
    the reload serves it."""
    root = docs(tmp_path)
    seal(root)
    first = PolicySnapshot({"docs": load_store(root)}, "docs")
    (root / "guard/alice.cedar").write_text("// generated rule table\n")
    outcome = reload_stores(root.parent, first)
    (state,) = outcome.stores
    assert state.change is Change.FAILED
    assert "docs/guard/alice.cedar:0: does not match store.seal" in str(state.problems[0])
    assert outcome.snapshot.stores["docs"] is first.stores["docs"]
    with (root / "guard/alice.cedar").open("a") as append:
        append.write(FORBID_ALICE)
    assert reload_stores(root.parent, first).stores[0].change is Change.FAILED
    seal(root)
    (state,) = reload_stores(root.parent, first).stores
    assert state.change is Change.RELOADED
    assert "no-alice" in state.served.policies  # type: ignore[union-attr]


def test_a_reload_requires_a_seal_when_told_to(tmp_path: Path) -> None:
    root = docs(tmp_path)
    first = PolicySnapshot({"docs": load_store(root)}, "docs")
    (root / "docs.cedar").write_text('permit (principal, action == Action::"view", resource);\n')
    (state,) = reload_stores(root.parent, first, require_seal=True).stores
    assert state.change is Change.FAILED
    assert REQUIRED_SEAL in str(state.problems[0])


def test_a_reload_builds_the_index_with_the_configured_cache_limits(tmp_path: Path) -> None:
    """A reload built every store's index with the default limits, whatever
    VERDICT_POLICY_CACHE_SETS and _POLICIES said (the start used them)."""
    stores = lending_copy(tmp_path)
    limits = SelectionCacheLimits(7, 300)
    first = PolicySnapshot({"lending": load_store(stores / "lending", limits)}, "lending")
    assert first.stores["lending"].index.cache_limits == limits
    (stores / "lending" / "extra.cedar").write_text(
        "forbid (principal, action, resource) when { false };\n"
    )
    (state,) = reload_stores(stores, first, cache=limits).stores
    assert state.change is Change.RELOADED
    assert state.served is not None
    assert state.served.index.cache_limits == limits


def test_a_name_the_loader_accepts_is_sealed_and_loads(tmp_path: Path) -> None:
    """A policy file named with a backslash is a plain file name on Linux: sealed, it loads
    (the seal once refused what `verdict seal` wrote)."""
    root = docs(tmp_path)
    (root / "a\\b.cedar").write_text(PERMIT_ALL)
    assert "a\\b.cedar" in seal(root)
    assert load_store(root).sealed


def test_a_seal_naming_too_many_files_is_refused_and_differences_are_capped(
    tmp_path: Path,
) -> None:
    root = docs(tmp_path)
    files = {f"f{n}.cedar": ZEROS for n in range(100_001)}
    (root / SEAL_FILE).write_text(json.dumps({"verdict_seal": 1, "files": files}))
    (refused,) = problems(root)
    assert "lists more than 100,000 files" in refused
    files = {f"f{n}.cedar": ZEROS for n in range(500)}
    (root / SEAL_FILE).write_text(json.dumps({"verdict_seal": 1, "files": files}))
    found = problems(root)
    assert len(found) == 21
    assert found[-1] == f"docs/{SEAL_FILE}:0: and 484 more files differ from store.seal"


def test_a_policy_file_name_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    """Such a name crashed every reload (UnicodeEncodeError in the version) and `verdict seal`."""
    root = docs(tmp_path)
    (root / os.fsdecode(b"bad\xff.cedar")).write_text(PERMIT_ALL)
    found = problems(root)
    assert found == ["docs:0: policy file name 'bad\\udcff.cedar' is not UTF-8: rename it"]
