"""The next policy snapshot from disk: changed stores loaded again, broken ones kept as they were.

The function is synchronous and pure apart from reading files, so the reloader runs it in a
worker thread; the caller swaps the result into the PolicyHolder in one assignment.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from verdict.errors import Diagnostic, PolicyLoadError
from verdict.files import pinned_reads
from verdict.policy.loader import (
    STORE_FILE_NAMES,
    check_store_folder,
    entities_file_version,
    files_as_loaded,
    load_policy_stores,
    load_store,
    store_folders_and_files,
    store_roots,
    store_version,
)
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.snapshot import PolicySnapshot, StoreSnapshot
from verdict.policy.writers import ignore_lease_breaks, open_for_writing

log = structlog.get_logger(__name__)

SETTLE_SECONDS = 0.25  # a store file changed more recently than this is waited out
MOST_SETTLE_SECONDS = 2.0  # ... for at most this long in one reload of one store
START_SETTLE_SECONDS = 30.0  # ... at a start, which has no last good version to serve on
START_LOAD_ATTEMPTS = 3  # loads at a start whose files changed or were held while read
WRITER_POLL_SECONDS = 0.05  # how often the settle asks again whether a writer is done


class Change(enum.Enum):
    """What a reload did to one store (the names of admin.proto's PolicyStoreState.Change)."""

    UNCHANGED = "UNCHANGED"
    RELOADED = "RELOADED"
    ADDED = "ADDED"
    REMOVED = "REMOVED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class StoreOutcome:
    """One store's result: the snapshot served from now on (None if none), any problems, and
    for the embedded entity store the entities to install (None: keep what it holds)."""

    store_id: str
    change: Change
    served: StoreSnapshot | None
    problems: tuple[Diagnostic, ...] = ()
    entities: object | None = None


# Reads (and validates) a store's entities for the embedded store, off the event loop;
# raises PolicyLoadError when they are broken, which fails the store's reload.
ReadEntities = Callable[[StoreSnapshot], object]


@dataclass(frozen=True)
class ReloadOutcome:
    """The snapshot to install, and what happened to each store."""

    snapshot: PolicySnapshot
    stores: tuple[StoreOutcome, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        """Whether anything served differs from before (the snapshot must be swapped in)."""
        return any(s.change in (Change.RELOADED, Change.ADDED, Change.REMOVED) for s in self.stores)

    @property
    def failed(self) -> bool:
        """Whether some store's files were refused."""
        return any(s.change is Change.FAILED for s in self.stores)


def reload_stores(
    stores_dir: Path,
    current: PolicySnapshot,
    read_entities: ReadEntities | None = None,
    only: frozenset[str] | None = None,
    *,
    cache: SelectionCacheLimits | None = None,
    require_seal: bool = False,
) -> ReloadOutcome:
    """Compare every store folder under ``stores_dir`` with ``current`` and load what changed.

    A store whose files hash to the version it is served at is kept as is (no parsing). A
    store whose files are broken keeps its last good snapshot, or stays absent if it is new.
    A folder that disappeared (or is no longer a folder) is no longer served. The default
    store keeps its name; if it is removed, requests naming no store get INVALID_ARGUMENT.

    ``only``: the stores to look at (an admin granted some stores reloads those alone);
    every other store is served on exactly as it was, whatever its files now hold, and is
    left out of the outcome. ``cache`` and ``require_seal`` as the start loaded the stores
    (``load_store``).
    """

    def wanted(store_id: str) -> bool:
        return only is None or store_id in only

    try:
        roots = [root for root in store_roots(stores_dir) if wanted(root.name)]
    except PolicyLoadError as exc:
        # The stores folder itself is gone or unreadable: serve what we have, say why.
        problems = tuple(exc.diagnostics)
        kept = (
            StoreOutcome(s, Change.FAILED, old, problems)
            for s, old in current.stores.items()
            if wanted(s)
        )
        return ReloadOutcome(current, tuple(kept))
    stores = {s: old for s, old in current.stores.items() if not wanted(s)}
    outcomes: list[StoreOutcome] = []
    for root in roots:
        old = current.stores.get(root.name)
        outcome = _reload_one(root, old, read_entities, cache, require_seal)
        outcomes.append(outcome)
        if outcome.served is not None:
            stores[root.name] = outcome.served
    for store_id in current.stores.keys() - {root.name for root in roots}:
        if wanted(store_id):
            outcomes.append(StoreOutcome(store_id, Change.REMOVED, None))
    snapshot = PolicySnapshot(stores=stores, default_store=current.default_store)
    return ReloadOutcome(snapshot, tuple(sorted(outcomes, key=lambda o: o.store_id)))


def _reload_one(
    root: Path,
    old: StoreSnapshot | None,
    read_entities: ReadEntities | None,
    cache: SelectionCacheLimits | None,
    require_seal: bool,
) -> StoreOutcome:
    store_id = root.name
    try:
        check_store_folder(root)  # before anything is read through it
        before, entities_before = store_version(root), entities_file_version(root)
        changed = old is None or (old.version, old.entities_version) != (before, entities_before)
        if changed and settle(root):  # a file was still being written: hash what it became
            before, entities_before = store_version(root), entities_file_version(root)
        if old is not None and (old.version, old.entities_version) == (before, entities_before):
            return StoreOutcome(store_id, Change.UNCHANGED, old)
        loaded = load_store(root, cache, require_seal=require_seal)
        entities = None
        entities_read = entities_before
        if read_entities is not None and _entities_changed(old, loaded):
            with pinned_reads():  # the version of exactly the bytes parsed
                entities = read_entities(loaded)
                entities_read = entities_file_version(root, pinned=True)
        # A writer paused mid-file leaves the same bytes before and after the read: the
        # kernel knows it still holds the file open (a prefix was served, round 11). Asked
        # before the last hash: a writer that finished between that hash and the question
        # was seen by neither (round 16); one finishing after the question changes the hash.
        writer = _being_written(root)
        # Hashed again after every read: entities.json is read after the policies, and a swap
        # of both landing between the two reads was served as the old policies with the new
        # entities, a state never on disk (it ALLOWed a principal both states denied).
        after = (store_version(root), entities_file_version(root))
    except PolicyLoadError as exc:
        return StoreOutcome(store_id, Change.FAILED, old, tuple(exc.diagnostics))
    except OSError as exc:  # a file vanished between listing and reading: try again next time
        problem = Diagnostic(store_id, 0, f"cannot read the store ({exc.strerror})")
        return StoreOutcome(store_id, Change.FAILED, old, (problem,))
    read = (loaded.version, loaded.entities_version)
    expected = (before, entities_before)
    # entities_read: an A -> B -> A edit of entities.json around its read hashed A before and
    # after, parsed B, and served B under A's version for good (the next reload: unchanged).
    if read != expected or after != expected or entities_read != entities_before:
        # The files changed while they were read: the parse may not match the version. The
        # change that caused this is followed by another event; serve nothing half-read.
        # Named by the store's id, like every other problem (never the server's own path).
        problem = Diagnostic(store_id, 0, "files changed while being read; retried next change")
        return StoreOutcome(store_id, Change.FAILED, old, (problem,))
    if writer is not None:
        return StoreOutcome(store_id, Change.FAILED, old, (writer,))
    change = Change.ADDED if old is None else Change.RELOADED
    return StoreOutcome(store_id, change, loaded, entities=entities)


def load_settled(
    stores_dir: Path,
    default_store: str | None = None,
    cache: SelectionCacheLimits | None = None,
    *,
    require_seal: bool = False,
) -> PolicySnapshot:
    """The start's load (``load_policy_stores``) under a reload's rules: each store read once
    its files are still and no process holds one open for writing (waited for up to
    START_SETTLE_SECONDS: a start has nothing else to serve); loaded again if a writer still
    held a file after the read or the files changed while being read (an edit during a long
    load is served, not refused), and refused, naming the file, after START_LOAD_ATTEMPTS. A
    server or a restarted worker started while a writer paused mid-file served the prefix
    (attack round 16)."""
    ignore_lease_breaks()  # before the first question (see writers)
    problems: list[Diagnostic] = []
    for _ in range(START_LOAD_ATTEMPTS):
        for root in store_roots(stores_dir):
            with contextlib.suppress(PolicyLoadError):  # the load reports a bad store folder
                check_store_folder(root)
                _settle_at_start(root)
        snapshot = load_policy_stores(stores_dir, default_store, cache, require_seal=require_seal)
        problems = _read_while_written(stores_dir, snapshot)
        if not problems:
            return snapshot
    raise PolicyLoadError(problems)


def _settle_at_start(root: Path) -> None:
    writers = _held_for_writing(root)
    if writers:
        log.warning("policy_store_being_written", store=root.name, files=writers[:5])
    settle(root, most=START_SETTLE_SECONDS)


def _read_while_written(stores_dir: Path, snapshot: PolicySnapshot) -> list[Diagnostic]:
    """Problems of stores a writer still holds, or whose files changed while being read."""
    problems: list[Diagnostic] = []
    for store_id, store in sorted(snapshot.stores.items()):
        root = stores_dir / store_id
        writer = _being_written(root)  # asked before the hash, as in _reload_one
        if writer is not None:
            problems.append(writer)
        elif not files_as_loaded(store):
            # entities.json too: one added during the start's load was served unread (and
            # unsealed) while later reloads found its version unchanged (attack round 21).
            problems.append(Diagnostic(store_id, 0, "files kept changing while being read"))
    return problems


def settle(root: Path, still: float = SETTLE_SECONDS, most: float = MOST_SETTLE_SECONDS) -> bool:
    """Wait while the store changed less than ``still`` seconds ago (a file written or added
    or removed) or a file of it is open for writing in another process, at most ``most``
    seconds in all, its own walks counted; whether it waited.

    An in-place rewrite (`cp new guard.cedar`, `cat > guard.cedar`) truncates, then writes in
    128 KiB calls: a reload landing between two of them read a prefix, and one ending at a
    statement (a long comment header, say) is valid Cedar without the forbids after it
    (attack round 11). A forbid moved to another file (`git checkout`: one file removed, then
    another written) was read in between as gone: the folders' times show the removal (round
    12). Writers like these finish within microseconds to milliseconds; a change younger than
    ``still`` is waited out. A time in the future is no writer at work and is not waited for
    (a store touched into the future had every reload wait its bound). A writer paused longer
    is seen by the kernel where it can be asked (``writers``); the reload refuses what it read
    while one held a file open."""
    started = time.monotonic()
    waited = False
    while True:
        folders, files = _store_paths(root)
        age = max(0.0, time.time() - newest_change(folders, files))  # a hair behind the disk
        writing = open_for_writing(files) or []
        left = most - (time.monotonic() - started)
        if (age >= still and not writing) or left <= 0.0:
            return waited
        time.sleep(min(still - age if age < still else WRITER_POLL_SECONDS, left))
        waited = True


def newest_change(folders: list[Path], files: list[Path]) -> float:
    """The latest modification time (seconds) of a store's ``folders`` and ``files``; a time
    in the future counts as none (see ``settle``)."""
    now = time.time()
    newest = 0.0
    for path in [*folders, *files]:
        with contextlib.suppress(OSError):
            changed = path.stat().st_mtime
            if changed <= now + 1.0:
                newest = max(newest, changed)
    return newest


def _store_paths(root: Path) -> tuple[list[Path], list[Path]]:
    """The store's folders, and its files: its ``*.cedar`` files and the named ones."""
    folders, files = store_folders_and_files(root)
    return folders, [*files, *(root / name for name in STORE_FILE_NAMES)]


def _held_for_writing(root: Path) -> list[str]:
    """The store's files (relative, sorted) another process holds open for writing now; none
    when the kernel cannot be asked."""
    writing = open_for_writing(_store_paths(root)[1]) or []
    return sorted(path.relative_to(root).as_posix() for path in writing)


def _being_written(root: Path) -> Diagnostic | None:
    """A problem naming the store's files that another process holds open for writing now
    (a writer paused mid-file: what was read may be a prefix), or None."""
    writers = _held_for_writing(root)
    if not writers:
        return None
    names = ", ".join(writers[:5])
    message = (
        f"{names}: open for writing in another process; not reloaded (the last good version "
        "serves on): reload again once the writer has closed it, or replace files by a rename"
    )
    return Diagnostic(root.name, 0, message)


def _entities_changed(old: StoreSnapshot | None, new: StoreSnapshot) -> bool:
    """Whether the embedded store must read the store's entities again: a new store, a changed
    entities.json, or a changed schema (the entities are checked against it)."""
    if old is None:
        return True
    return (old.entities_version, old.schema_version) != (
        new.entities_version,
        new.schema_version,
    )
