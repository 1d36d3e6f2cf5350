"""Sealed stores against real `verdict serve` processes: a deploy that writes a policy file in
several steps (round 16's finding 3) is never served half-done once the store is sealed, and a
server told to require seals refuses stores without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import free_port
from tests.security.serve_process import serve_command
from tests.security.test_attack_round10 import ALLOW, DENY, doc_decision, docs_store, served
from tests.security.test_attack_round11 import ALICE_FORBID, large_guard_store
from tests.security.test_attack_round16 import NO_WATCH, reload_all
from tests.workers_support import wait_until
from verdict._gen.verdict.v1 import admin_pb2 as apb


def verdict(*args: str) -> subprocess.CompletedProcess[str]:
    """``verdict ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seal(stores: Path) -> None:
    result = verdict("seal", "--stores", str(stores))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("docs: sealed "), result.stdout
    assert "file(s) in docs/store.seal" in result.stdout


def test_a_sealed_store_regenerated_by_appends_is_not_served_between_them(tmp_path: Path) -> None:
    """Round 16's finding 3 (a strict xfail for unsealed stores), sealed: guard.cedar is
    regenerated as a shell script does it (`gen-header > guard.cedar`, a slow step, then
    `gen-rule >> guard.cedar`). The reload between the two finds a file that does not match
    the seal: FAILED, naming it, and the last good version (which denies alice) serves on.
    Once the append restores the sealed bytes, the store is served unchanged."""
    stores, path, guard = large_guard_store(tmp_path)
    seal(stores)
    header = guard[: -len(ALICE_FORBID)]
    with served(stores, "--default-store", "docs", env=NO_WATCH) as (_, port, _log):
        assert doc_decision(port).decision == DENY
        path.write_bytes(header)  # `> guard.cedar`: truncated, written, closed
        (state,) = reload_all(port).stores
        assert state.change == apb.PolicyStoreState.FAILED
        problems = [(p.file, p.message) for p in state.problems]
        assert problems[0][0] == "docs/guard.cedar", problems
        assert problems[0][1].startswith("does not match store.seal"), problems
        assert doc_decision(port).decision == DENY, "alice ALLOWed from the header"
        with path.open("ab") as append:  # `>> guard.cedar`, the slow step done
            append.write(guard[len(header) :])
        (state,) = reload_all(port).stores
        assert state.change == apb.PolicyStoreState.UNCHANGED
        assert doc_decision(port).decision == DENY


def test_a_watched_sealed_store_serves_a_deploy_once_it_is_sealed(tmp_path: Path) -> None:
    """With the watch on (the default), every step of a deploy triggers a reload: the ones
    before the seal fail and the old policies serve; the seal written last is the switch."""
    stores = docs_store(tmp_path)
    (stores / "docs" / "guard.cedar").write_text(ALICE_FORBID)
    seal(stores)
    with served(stores, "--default-store", "docs") as (_, port, log):
        assert doc_decision(port).decision == DENY
        (stores / "docs" / "guard.cedar").write_text("// the forbid is being regenerated\n")
        refused = wait_until(lambda: "does not match store.seal" in log.read_text(), 15)
        assert refused, log.read_text()[-2000:]
        assert doc_decision(port).decision == DENY, "alice ALLOWed mid-deploy"
        (stores / "docs" / "guard.cedar").write_text("// the forbid was retired\n")
        time.sleep(1.0)  # past the debounce and the settle: reloads ran and were refused
        assert doc_decision(port).decision == DENY, "served before the deploy sealed it"
        seal(stores)
        assert wait_until(lambda: doc_decision(port).decision == ALLOW, 15)


def test_serve_refuses_an_unsealed_store_when_seals_are_required(tmp_path: Path) -> None:
    stores = docs_store(tmp_path)
    environment = {**os.environ, "VERDICT_REQUIRE_SEAL": "true"}
    command = serve_command(stores, free_port())
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=environment, check=False
    )
    assert result.returncode == 2
    assert "docs/store.seal:0: missing: this server loads sealed stores only" in result.stderr
    seal(stores)
    with served(stores, env={"VERDICT_REQUIRE_SEAL": "true"}) as (_, port, _log):
        assert doc_decision(port).decision == ALLOW


def test_a_sealed_store_whose_entities_changed_does_not_start(tmp_path: Path) -> None:
    """entities.json is sealed too: changed after the seal, the store is refused at the start
    (an embedded store reads it after the policies, and checks the bytes it parses)."""
    stores = docs_store(tmp_path)
    seal(stores)
    user = {"uid": {"type": "User", "id": "mallory"}, "attrs": {}, "parents": []}
    (stores / "docs" / "entities.json").write_text(json.dumps([user]))
    result = subprocess.run(
        serve_command(stores, free_port()), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "docs/entities.json:0: does not match store.seal" in result.stderr


def test_seal_and_validate_on_the_command_line(tmp_path: Path) -> None:
    """`verdict seal`: 0 when sealed; a store that does not load: 1, nothing sealed (not even
    the stores that load); `validate` names each file changed since."""
    stores = docs_store(tmp_path)
    broken = stores / "broken"
    broken.mkdir()
    (broken / "p.cedar").write_text("permit (principal, action, resource")
    result = verdict("seal", "--stores", str(stores))
    assert result.returncode == 1
    assert "no store sealed" in result.stderr
    assert not (stores / "docs" / "store.seal").exists()
    result = verdict("seal", "--stores", str(stores), "--store", "docs")
    assert result.returncode == 0, result.stderr
    assert (stores / "docs" / "store.seal").exists()
    (stores / "docs" / "docs.cedar").write_text(ALICE_FORBID)
    (broken / "p.cedar").unlink()
    (broken / "p.cedar").write_text("permit (principal, action, resource);")
    result = verdict("validate", "--stores", str(stores))
    assert result.returncode == 1
    assert "docs/docs.cedar:0: does not match store.seal" in result.stderr
    result = verdict("seal", "--stores", str(stores), "--store", "docz")
    assert result.returncode == 2
    assert "did you mean 'docs'?" in result.stderr


def test_sealing_a_folder_without_stores_is_a_load_error(tmp_path: Path) -> None:
    """A deploy step that seals nothing (an empty or wrong folder) fails as serve and test do
    on it (exit 2), instead of exiting 0 having written no seal."""
    empty = tmp_path / "stores"
    empty.mkdir()
    result = verdict("seal", "--stores", str(empty))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: {empty}:0: no policy stores (subfolders) found\nerror: no store sealed\n"
    )
