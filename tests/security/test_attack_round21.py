"""Attack round 21: sealed policy stores (``verdict seal``, ``store.seal``,
``VERDICT_REQUIRE_SEAL``), attacked through real ``verdict serve`` processes on loopback, the
``verdict`` CLI as subprocesses, a real redis-server and real files. Races are timed with
inotify on the files the server reads (as round 16 did), so each lands on its first attempt.

Findings, all fixed in the same session (each a test asserting the correct behaviour; they
were strict xfails): 1 presence is pinned like bytes (``files.exists``: a path absent when
the load first asked stays absent for its reads, one read stays present), used by the
loader, ``read_links`` and ``read_store_settings``; 2 a store sealed without entities.json
refuses one (``seal.SEALED_ABSENT``), its entities version is that of the file the load found,
and the start compares entities versions too; 3 ``verdict entities load`` checks the store's
files are as loaded before writing; 4 follows from 1 (the digests come from the pin the
check read through); 5 backslashes are allowed in seal names; 6 a seal lists at most 100,000
files and differences are named up to 20. The non-UTF-8 name is refused by name.

1. **Wrong ALLOW: a sealed store is served without its links file.** The load pins every
   file's bytes, but asks whether the schema, ``store.toml``, the links files and
   ``entities.json`` exist on the disk (``Path.exists``/``is_file``), not through the pin. A
   deploy that unlinks an unchanged ``links.json`` and writes it again (``tar x``, ``rm`` +
   ``cp``) between the seal check and ``read_links`` leaves a load whose seal matched (the
   pinned bytes) that read no links; the reload's last hash sees the same bytes again and
   the store is RELOADED without the link that forbids alice: ALLOW, where the sealed state
   and the state on disk both deny her; served on (UNCHANGED) until the next change. The
   same hole drops a schema (its action groups) or ``store.toml``. Root: ``links.py``
   ``read_links`` (``(root / name).exists()``), ``loader._load_store`` (``is_file`` at lines
   218-219 and 248), ``loader._load_schema``, ``store_settings.read_store_settings``.
2. **Served unsealed (wrong ALLOW), with ``VERDICT_REQUIRE_SEAL=true``: an ``entities.json``
   added while a server starts, to a store sealed without one, is read by the embedded
   store unchecked.** ``StoreSnapshot.sealed_entities`` is ``""`` when the seal lists no
   entities.json, and ``""`` means "not sealed" to ``seal.entities_problem``; the snapshot's
   ``entities_file`` comes from an ``is_file`` after the parse. The start's second look
   (``reload._read_while_written``) hashes the policies, not entities.json, so alice, made an
   admin by the unsealed file, is ALLOWed; every reload after is UNCHANGED.
3. **Served unsealed into Redis: ``verdict entities load`` (``VERDICT_REQUIRE_SEAL=true``)
   writes an ``entities.json`` added during its load of a store sealed without one** (same
   root as 2, ``cli/entities_redis.load``); exit 0, Redis marked loaded.
4. **``verdict seal`` seals a file it never checked.** ``sealable_digests`` checks the store
   (``_load_store``), then digests ``store_digests``: a file absent when the check looked
   (its ``is_file``) and present when the digests are read is sealed unread. A broken schema
   written during the check is sealed (exit 0); the store then never loads. Root:
   ``loader.sealable_digests`` / the unpinned existence checks of 1.
5. **Wrong error: ``verdict seal`` writes a seal its own loader refuses.** A policy file
   named ``a\\b.cedar`` (legal on Linux, loaded by the server) is sealed (exit 0), and every
   load then fails "invalid seal: files: 'a\\\\b.cedar' is not a relative path inside the
   store" (``seal.path_problem`` refuses ``\\``; ``store_digests`` produces it).
6. **Wrong error: a seal listing many files answers ReloadPolicies with RESOURCE_EXHAUSTED.**
   ``seal_problems`` gives one problem per file (100,000 missing names: a 16 MB seal, far
   under the 64 MiB bound; the loader's own 100,000-name bound does not apply), all of them
   in the answer (over gRPC's 4 MiB: the admin never learns the store FAILED) and in one
   log line of tens of MB.

Also seen (not a seal problem, no test): a ``*.cedar`` file whose name is not UTF-8 makes
``loader.store_version`` raise UnicodeEncodeError (``verdict seal`` exits with a traceback;
a reload crashes: ``policy_reload_crashed``).

Held (plain tests): a ``store.seal`` that is a FIFO, a link to ``/etc/passwd``, JSON with a
repeated key or nested too deep is refused at once without quoting the file; with
``VERDICT_REQUIRE_SEAL`` a reload does not add a new unsealed store folder; ``verdict seal``
with one broken store seals none.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.test_attack_round10 import ALLOW, DENY, doc_decision, docs_store, served
from tests.security.test_attack_round16 import NO_WATCH, reload_all
from tests.security.test_sealed_stores import seal, verdict
from verdict._gen.verdict.v1 import admin_pb2 as apb

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
_EVENT = struct.Struct("iIII")  # struct inotify_event (a watch on a file: no name follows)
REQUIRE_SEAL = {**NO_WATCH, "VERDICT_REQUIRE_SEAL": "true"}
ATTEMPTS = 3  # a race that did not land is tried again

BLOCK_TEMPLATE = '@id("block")\nforbid (principal == ?principal, action, resource);\n'
ADMINS_PERMIT = '@id("admins")\npermit (principal in Group::"admins", action, resource);\n'
ALICE_LINK = [{"id": "block-alice", "template": "block", "values": {"?principal": 'User::"alice"'}}]
BOB_LINK = [{"id": "block-bob", "template": "block", "values": {"?principal": 'User::"bob"'}}]
ADMINS = {"type": "Group", "id": "admins"}
ALICE_ADMIN = [
    {"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": [ADMINS]},
    {"uid": ADMINS, "attrs": {}, "parents": []},
]
# Policies that make a load's parse take a while (~0.1 s): the window the races below use.
FILLER = "".join(
    f'@id("row-{row}")\npermit (principal == User::"u{row}", action, resource);\n'
    for row in range(3000)
)


class FileReads:
    """Counts the reads of some files by any process (inotify: an open followed by a read;
    the reload's lease questions open without reading)."""

    def __init__(self, *paths: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = int(libc.inotify_init1(os.O_CLOEXEC))
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self._names: dict[int, str] = {}
        for path in paths:
            wd = int(libc.inotify_add_watch(self._fd, os.fsencode(path), IN_OPEN | IN_ACCESS))
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self._names[wd] = path.name
        self._opened: dict[str, bool] = {}
        self.reads = {path.name: 0 for path in paths}

    def wait(
        self, name: str, count: int, seconds: float, done: threading.Event | None = None
    ) -> bool:
        """Return once ``name`` has been read ``count`` times in all; False after ``seconds``,
        or once ``done`` is set (what the reads were awaited for is over: waiting on for a
        read that will not come cost 15 s a try, and put the test past its timeout in CI)."""
        deadline = time.monotonic() + seconds
        while self.reads[name] < count:
            left = deadline - time.monotonic()
            if left <= 0 or (done is not None and done.is_set()):
                return False
            if not select.select([self._fd], [], [], min(left, 0.05))[0]:
                continue
            data = os.read(self._fd, 64 * 1024)
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                watched = self._names.get(wd)
                if watched is None:
                    continue
                if mask & IN_OPEN:
                    self._opened[watched] = True
                elif mask & IN_ACCESS and self._opened.get(watched):
                    self._opened[watched] = False
                    self.reads[watched] += 1
        return True


@contextmanager
def file_reads(*paths: Path) -> Iterator[FileReads]:
    """Reads of ``paths`` counted from now until the end of the block."""
    reads = FileReads(*paths)
    try:
        yield reads
    finally:
        os.close(reads._fd)


def in_thread(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def linked_store(tmp_path: Path) -> Path:
    """The docs store (permit-all, no schema) with alice forbidden by a link of a template,
    FILLER, and an entities.json ``[]`` padded to 8 MiB (its hash takes a few ms)."""
    stores = docs_store(tmp_path)
    docs = stores / "docs"
    (docs / "guard.cedar").write_text(BLOCK_TEMPLATE)
    (docs / "links.json").write_text(json.dumps(ALICE_LINK))
    (docs / "filler.cedar").write_text(FILLER)
    (docs / "entities.json").write_bytes(b"[]" + b" " * (8 << 20))
    return stores


def admins_store(tmp_path: Path) -> Path:
    """A store permitting Group::"admins" alone, sealed without entities.json (its entities
    are written through the API), with a links file, which the seal check reads after the
    place of entities.json."""
    stores = docs_store(tmp_path)
    docs = stores / "docs"
    (docs / "entities.json").unlink()
    (docs / "docs.cedar").write_text(ADMINS_PERMIT)
    (docs / "guard.cedar").write_text(BLOCK_TEMPLATE)
    (docs / "links.json").write_text(json.dumps(BOB_LINK))
    (docs / "filler.cedar").write_text(FILLER)
    seal(stores)
    assert "entities.json" not in json.loads((docs / "store.seal").read_text())["files"]
    return stores


def added_during_the_seal_check(stores: Path, run: Callable[[], object]) -> object:
    """``run()`` while entities.json (alice an admin) is written into the docs store just
    after the seal check read links.json (its first read); what ``run`` returned."""
    docs = stores / "docs"
    with file_reads(docs / "links.json") as reads:

        def deploy() -> None:
            if reads.wait("links.json", 1, 30):
                (docs / "entities.json").write_text(json.dumps(ALICE_ADMIN))

        writer = in_thread(deploy)
        try:
            return run()
        finally:
            writer.join(30)


# --- Finding 1: files present at the seal check, absent at the parse -------------------------


def test_a_links_file_unlinked_and_written_again_during_a_reload_is_not_dropped(
    tmp_path: Path,
) -> None:
    """The store is sealed; a deploy changes docs.cedar (a comment) and seals again. Its
    reload reads links.json for its first hash and for the seal check (both match); the
    deploy's ``tar x`` then unlinks the unchanged links.json and writes the same bytes again,
    done before the reload's last hash. The seal matched the pinned bytes, ``read_links``
    found no file: RELOADED with 3,002 policies (no link) and alice ALLOWed, though the
    store before and after both forbid her."""
    stores = linked_store(tmp_path)
    docs = stores / "docs"
    links, aside, entities = docs / "links.json", docs / ".links.aside", docs / "entities.json"
    seal(stores)
    with served(stores, "--default-store", "docs", env=NO_WATCH) as (_, port, _log):
        assert doc_decision(port).decision == DENY
        states = []
        for attempt in range(ATTEMPTS):
            source = docs / "docs.cedar"
            source.write_text(f"// deploy {attempt}\n" + source.read_text())
            seal(stores)
            time.sleep(0.5)  # older than the settle's 0.25 s: the reload hashes once first
            with file_reads(links, entities) as reads:
                reloaded = threading.Event()

                def deploy(reloaded: threading.Event = reloaded) -> None:
                    # links.json read 2 is the seal check's (read 1: the reload's hash) ...
                    if not reads.wait("links.json", 2, 15):
                        return
                    os.rename(links, aside)
                    # ... entities.json read 3 the snapshot's version, after read_links.
                    reads.wait("entities.json", 3, 15, done=reloaded)
                    os.rename(aside, links)

                writer = in_thread(deploy)
                try:
                    (state,) = reload_all(port).stores
                finally:
                    reloaded.set()  # a reload refused before read 3 ends the wait for it
                    writer.join(20)
            assert links.exists()
            assert not aside.exists()
            states.append((state.change, state.policies))
            if doc_decision(port).decision == ALLOW:
                break
        assert doc_decision(port).decision == DENY, f"alice ALLOWed without the link: {states}"


# --- Findings 2-3: entities.json added to a store sealed without one ---------------------------


def test_an_entities_file_added_during_a_start_is_not_served_unsealed(tmp_path: Path) -> None:
    """The store is sealed without entities.json; one (alice in Group::"admins") is written
    while a server requiring seals starts, after the seal check found none and before the
    parse ends. The server starts, its embedded store reads the file with no digest to match,
    and alice is ALLOWed; a reload then says UNCHANGED. Correct: the file is refused (the
    start fails or the store is served without it) and alice is denied."""
    stores = admins_store(tmp_path)
    entities = stores / "docs" / "entities.json"
    decisions = []
    for _ in range(ATTEMPTS):
        entities.unlink(missing_ok=True)

        def start() -> tuple[int, apb.PolicyStoreState | None]:
            try:
                with served(stores, "--default-store", "docs", env=REQUIRE_SEAL) as (_, port, _):
                    time.sleep(0.2)
                    return doc_decision(port).decision, reload_all(port).stores[0]
            except AssertionError:  # the server refused to start (wait_serving)
                return DENY, None

        outcome = added_during_the_seal_check(stores, start)
        assert isinstance(outcome, tuple)
        decision, state = outcome
        assert entities.exists()
        decisions.append((decision, state.change if state is not None else None))
        if decision == ALLOW:
            break
    assert all(d == DENY for d, _ in decisions), f"alice ALLOWed by unsealed entities: {decisions}"


def test_entities_load_refuses_an_entities_file_added_to_a_store_sealed_without_one(
    tmp_path: Path, redis: RedisProcess
) -> None:
    stores = admins_store(tmp_path)
    entities = stores / "docs" / "entities.json"
    results = []
    for _ in range(ATTEMPTS):
        entities.unlink(missing_ok=True)
        redis.cli("FLUSHALL")

        def load() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores),
                 "--redis-url", redis.url],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "VERDICT_REQUIRE_SEAL": "true"},
            )  # fmt: skip

        result = added_during_the_seal_check(stores, load)
        assert isinstance(result, subprocess.CompletedProcess)
        results.append((result.returncode, result.stdout.strip()))
        if "2 entities" in result.stdout:
            break
    assert all(code != 0 for code, _ in results), f"unsealed entities loaded: {results}"


# --- Findings 4-5: what `verdict seal` seals ----------------------------------------------------


def test_seal_never_seals_a_file_its_check_did_not_read(tmp_path: Path) -> None:
    """A broken schema is written while ``verdict seal`` parses the store (after the check
    looked for a schema). Correct: the seal holds only what was checked (or fails); here it
    vouches for the schema, and the store it sealed never loads."""
    stores = docs_store(tmp_path)
    docs = stores / "docs"
    (docs / "filler.cedar").write_text(FILLER)
    schema, seal_path = docs / "schema.cedarschema", docs / "store.seal"
    outcomes = []
    for _ in range(ATTEMPTS):
        schema.unlink(missing_ok=True)
        seal_path.unlink(missing_ok=True)
        with file_reads(docs / "filler.cedar") as reads:

            def deploy() -> None:
                if reads.wait("filler.cedar", 1, 30):  # the check's parse, schema looked for
                    schema.write_text("entity User = {\n  broken")

            writer = in_thread(deploy)
            result = verdict("seal", "--stores", str(stores))
            writer.join(30)
        sealed = json.loads(seal_path.read_text())["files"] if seal_path.exists() else {}
        outcomes.append((result.returncode, sorted(sealed)))
        if "schema.cedarschema" in sealed:
            break
    assert all("schema.cedarschema" not in names for _, names in outcomes), outcomes


def test_a_store_verdict_seal_sealed_loads_again(tmp_path: Path) -> None:
    stores = docs_store(tmp_path)
    (stores / "docs" / "a\\b.cedar").write_text('@id("b")\npermit (principal, action, resource);\n')
    assert verdict("validate", "--stores", str(stores)).returncode == 0
    sealed = verdict("seal", "--stores", str(stores))
    validated = verdict("validate", "--stores", str(stores))
    assert sealed.returncode != 0 or validated.returncode == 0, validated.stderr


# --- Finding 6: a seal naming very many files ---------------------------------------------------


def test_a_seal_naming_many_missing_files_is_reported_as_failed(tmp_path: Path) -> None:
    stores = docs_store(tmp_path)
    docs = stores / "docs"
    seal(stores)
    document = json.loads((docs / "store.seal").read_text())
    document["files"].update({f"gone/f{n:06d}.cedar": "sha256:" + "0" * 64 for n in range(100_000)})
    with served(stores, "--default-store", "docs", env=NO_WATCH) as (_, port, _log):
        (docs / "store.seal").write_text(json.dumps(document))
        try:
            (state,) = reload_all(port).stores
        except grpc.RpcError as exc:
            pytest.fail(f"ReloadPolicies failed: {exc.code()}")
        assert state.change == apb.PolicyStoreState.FAILED
        assert doc_decision(port).decision == ALLOW  # the last good version serves on


# --- Held ----------------------------------------------------------------------------------------


def test_unusable_seals_are_refused_at_once_without_quoting_them(tmp_path: Path) -> None:
    """A reload of a sealed store whose store.seal became a FIFO (no writer: never blocks), a
    link to /etc/passwd, JSON with a repeated key, or nested too deep: FAILED, quickly, the
    last good version serving on, and nothing of /etc/passwd in the answer."""
    stores = docs_store(
        tmp_path, '@id("g")\nforbid (principal == User::"alice", action, resource);\n'
    )
    docs = stores / "docs"
    seal(stores)
    path = docs / "store.seal"
    digest = json.loads(path.read_text())["files"]["docs.cedar"]
    with served(stores, "--default-store", "docs", env=NO_WATCH) as (_, port, _log):
        for make in ("fifo", "passwd", "repeated", "deep"):
            path.unlink()
            if make == "fifo":
                os.mkfifo(path)
            elif make == "passwd":
                path.symlink_to("/etc/passwd")
            elif make == "repeated":
                path.write_text(
                    '{"verdict_seal": 1, "files": {}, "files": {"docs.cedar": "' + digest + '"}}'
                )
            else:
                path.write_text('{"verdict_seal": 1, "files": {"docs.cedar": [[["x"]]]}}')
            started = time.monotonic()
            (state,) = reload_all(port).stores
            assert time.monotonic() - started < 5
            assert state.change == apb.PolicyStoreState.FAILED, (make, state)
            assert "root:" not in str(state)
            assert doc_decision(port).decision == DENY


def test_a_reload_never_adds_an_unsealed_store_when_seals_are_required(tmp_path: Path) -> None:
    stores = docs_store(
        tmp_path, '@id("g")\nforbid (principal == User::"alice", action, resource);\n'
    )
    seal(stores)
    with served(stores, "--default-store", "docs", env=REQUIRE_SEAL) as (_, port, _log):
        other = stores / "other"
        other.mkdir()
        (other / "p.cedar").write_text('@id("p")\npermit (principal, action, resource);\n')
        changes = {s.policy_store_id: s.change for s in reload_all(port).stores}
        assert changes == {
            "docs": apb.PolicyStoreState.UNCHANGED,
            "other": apb.PolicyStoreState.FAILED,
        }
        assert doc_decision(port).decision == DENY


def test_seal_with_one_broken_store_seals_none(tmp_path: Path) -> None:
    stores = docs_store(tmp_path)
    broken = stores / "broken"
    broken.mkdir()
    (broken / "p.cedar").write_text("permit (principal, action, resource")
    result = verdict("seal", "--stores", str(stores))
    assert result.returncode == 1, result.stderr
    assert not (stores / "docs" / "store.seal").exists()
    assert not (broken / "store.seal").exists()
